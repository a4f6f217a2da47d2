//! `recover`: rebuild netnat's record from the kernel when it cannot be read (see
//! `crate::recover` for what the kernel holds). The damaged file is kept beside the new one.

use super::Ctx;
use std::path::Path;

pub fn recover(dir: &Path) -> anyhow::Result<()> {
    let (mut ctx, damage) = Ctx::open_any(dir)?;
    let file = ctx.store().file();
    let Some(d) = damage else {
        println!(
            "recover: the record {} is readable; nothing to recover (`netnat audit` compares it with the kernel)",
            file.display()
        );
        return Ok(());
    };
    // The namespaces' marks under the state directory, lost with it when it was deleted.
    for sb in ctx.state.sandboxes.values().filter(|s| s.created) {
        ctx.store().mark_netns(&sb.name)?;
    }
    let kept = ctx.store().keep_damaged()?;
    ctx.save()?;
    let st = &ctx.state;
    let endpoints: usize = st.sandboxes.values().map(|s| s.endpoints.len()).sum();
    println!("recover: the record {} could not be used: {}", file.display(), d.why);
    println!(
        "recover: rebuilt it from the kernel: {} network(s), {} sandbox(es), {endpoints} endpoint(s), {} published \
         mapping(s)",
        st.networks.len(),
        st.sandboxes.len(),
        st.mappings.len()
    );
    if let Some(k) = kept {
        println!("recover: the damaged record is kept as {}", k.display());
    }
    if d.lost.is_empty() {
        println!("recover: nothing was lost");
    } else {
        println!("recover: what the kernel could not tell:");
        for l in &d.lost {
            println!("  - {l}");
        }
    }
    Ok(())
}
