//! Every relative link in README.md, BENCHMARKS.md and docs/*.md points at a file that exists,
//! and a `#anchor` at a heading of the Markdown file it names. Pure: reads files only.

mod common;

use common::root;

use std::fs;
use std::path::{Path, PathBuf};

/// The Markdown pages of the repository that are checked.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("BENCHMARKS.md")];
    for e in fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    pages.sort();
    pages
}

/// Link targets of `[text](target)` and `![alt](target)`, outside code blocks and code spans.
fn links(markdown: &str) -> Vec<String> {
    let mut out = vec![];
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Code spans are text, not links: drop what is between backticks.
        let text: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            // `[text](target "title")`: the target is the first word.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut in_fence = false;
    let mut out = vec![];
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The problems of one page's links (empty when all resolve).
fn check_page(page: &Path, markdown: &str) -> Vec<String> {
    let mut problems = vec![];
    for target in links(markdown) {
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() { page.to_path_buf() } else { page.parent().unwrap().join(path) };
        if !file.exists() {
            problems.push(format!("{}: link to {target}: no such file", page.display()));
            continue;
        }
        if let Some(anchor) = anchor {
            if file.extension().is_some_and(|x| x == "md") {
                let text = fs::read_to_string(&file).unwrap();
                if !anchors(&text).iter().any(|a| a == anchor) {
                    problems.push(format!("{}: link to {target}: no such heading", page.display()));
                }
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_resolves() {
    let mut problems = vec![];
    let mut count = 0;
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        count += links(&text).len();
        problems.extend(check_page(&page, &text));
    }
    assert!(count > 20, "only {count} links found: is the link parser broken?");
    assert!(problems.is_empty(), "broken links:\n  {}", problems.join("\n  "));
}

#[test]
fn the_readme_links_every_page_of_docs() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let linked = links(&readme);
    for page in pages().iter().filter(|p| p.parent() == Some(&root().join("docs"))) {
        let rel = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        assert!(linked.iter().any(|l| l.split('#').next() == Some(rel.as_str())), "README.md does not link {rel}");
    }
}

#[test]
fn the_checker_finds_broken_links_and_ignores_code() {
    let page = root().join("README.md");
    let md = "[ok](docs/nft-layout.md) [bad](docs/nope.md) ![img](docs/demo-graph.png)\n\
              [anchor](#install) [bad anchor](#nope) [web](https://example.org/x)\n\
              `[code](not-a-link.md)`\n```\n[fenced](nor-this.md)\n```\n";
    assert_eq!(
        links(md),
        ["docs/nft-layout.md", "docs/nope.md", "docs/demo-graph.png", "#install", "#nope", "https://example.org/x"]
    );
    let problems = check_page(&page, md);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("docs/nope.md: no such file"));
    assert!(problems[1].contains("#nope: no such heading"));
    assert_eq!(slug(" A quick tour"), "a-quick-tour");
    assert_eq!(slug(" Why `inet`"), "why-inet");
}
