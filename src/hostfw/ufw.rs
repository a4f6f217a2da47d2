//! ufw: its own route rules for each bridge, what `ufw route allow in on BR` and `ufw route allow
//! out on BR` make, with the comment `netnat network NAME`. ufw has no interface but its command
//! and its rule files; its command is the supported one (it keeps /etc/ufw/user*.rules and the
//! running rules in step), so the rules survive `ufw reload` and `ufw disable`/`enable`.

use super::{mark, marked_network, Driver, Held, Tables};
use crate::model::{HostFirewallKind, Network};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::process::Command;

pub struct Ufw;

impl Ufw {
    pub fn new() -> Ufw {
        Ufw
    }
}

fn ufw(args: &[&str]) -> Result<String> {
    let out = Command::new("ufw")
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("running ufw {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("`ufw {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// netnat's route rules in `ufw show added`'s lines: (bridge, network, is "in").
fn parse_added(text: &str) -> Vec<(String, String, bool)> {
    let mut out = vec![];
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("ufw route allow ") else { continue };
        let Some((dir_if, comment)) = rest.split_once(" comment ") else { continue };
        let comment = comment.trim().trim_matches('\'');
        let Some(network) = marked_network(comment) else { continue };
        let words: Vec<&str> = dir_if.split_whitespace().collect();
        if let ["in" | "out", "on", bridge] = words.as_slice() {
            out.push((bridge.to_string(), network.to_string(), words[0] == "in"));
        }
    }
    out
}

impl Driver for Ufw {
    fn kind(&self) -> HostFirewallKind {
        HostFirewallKind::Ufw
    }

    fn opened(&mut self, _: &mut dyn Tables) -> Result<BTreeMap<String, Held>> {
        let rules = parse_added(&ufw(&["show", "added"])?);
        let mut out = BTreeMap::new();
        for (b, n, _) in &rules {
            let has = |dir: bool| rules.iter().any(|(b2, n2, d)| b2 == b && n2 == n && *d == dir);
            out.insert(b.clone(), Held { network: n.clone(), complete: has(true) && has(false) });
        }
        Ok(out)
    }

    fn open(&mut self, _: &mut dyn Tables, net: &Network) -> Result<()> {
        // ufw skips a rule it already has ("Skipping adding existing rule").
        for dir in ["in", "out"] {
            ufw(&["route", "allow", dir, "on", &net.bridge, "comment", &mark(&net.name)])?;
        }
        Ok(())
    }

    fn close(&mut self, _: &mut dyn Tables, bridge: &str) -> Result<()> {
        for (b, _, is_in) in parse_added(&ufw(&["show", "added"])?) {
            if b == bridge {
                ufw(&["route", "delete", "allow", if is_in { "in" } else { "out" }, "on", bridge])?;
            }
        }
        Ok(())
    }

    fn describe(&self, bridge: &str) -> String {
        format!("ufw route allow in on {bridge}, ufw route allow out on {bridge}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_netnats_rules_from_show_added() {
        let text = "Added user rules (see 'ufw status' for running firewall):\n\
                    ufw allow 22/tcp\n\
                    ufw route allow in on br9 comment 'netnat network n1'\n\
                    ufw route allow out on br9 comment 'netnat network n1'\n\
                    ufw route allow in on eth1 comment 'mine'\n";
        let got = super::parse_added(text);
        assert_eq!(got, vec![("br9".into(), "n1".into(), true), ("br9".into(), "n1".into(), false)]);
    }
}
