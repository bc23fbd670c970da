//! What `state` and `list` report: the state document of one container, or of every one under
//! the root that is nvbind's (another runtime's, in a shared root, is left out of `list` and
//! refused by `state`). A half-made container (what a killed create or delete left) is reported as far as
//! it is known, with a warning, not as an error: an engine that asks goes on to delete it.

use std::collections::BTreeSet;
use std::fs;

use anyhow::{bail, Context, Result};
use nvbind::state_doc::StateDoc;

use crate::lifecycle::halfmade::{inspect, Entry, HalfMade, Intent, INTERNAL_DIRS};
use crate::state_root::id::validate_id;
use crate::state_root::Ctx;
use crate::warning::warn;

/// The state document of container `id`.
pub fn state_of(ctx: &Ctx, id: &str) -> Result<StateDoc> {
    Ok(match inspect(ctx, id)? {
        Entry::Missing => bail!(
            "container {id:?} does not exist under {}",
            ctx.root.display()
        ),
        Entry::Complete(container) => StateDoc::of(&container),
        Entry::HalfMade(half) => half_made_doc(&half),
        Entry::Foreign(theirs) => return Err(theirs.into()),
    })
}

/// The state documents of every container under the root, by ID.
pub fn list(ctx: &Ctx) -> Result<Vec<StateDoc>> {
    let entries =
        fs::read_dir(&ctx.root).with_context(|| format!("cannot read {}", ctx.root.display()))?;
    let mut ids: BTreeSet<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !INTERNAL_DIRS.contains(&name.as_str()))
        .collect();
    // Creates that have not made their directory yet (or were killed before).
    ids.extend(Intent::ids(ctx));
    let mut docs = Vec::new();
    for id in &ids {
        // One container that cannot be read must not hide all the others.
        match validate_id(id).and_then(|_| inspect(ctx, id)) {
            // Deleted while we list.
            Ok(Entry::Missing) => {}
            Ok(Entry::Complete(c)) => docs.push(StateDoc::of(&c)),
            Ok(Entry::HalfMade(half)) => docs.push(half_made_doc(&half)),
            // Another runtime's, in a shared root: its own `list` shows it. Not a warning:
            // under Docker's root every `list` would print one per runc container.
            Ok(Entry::Foreign(theirs)) => tracing::debug!("not listing {id:?}: {theirs}"),
            Err(e) => warn(format!("skipping {}: {e:#}", ctx.root.join(id).display())),
        }
    }
    Ok(docs)
}

fn half_made_doc(half: &HalfMade) -> StateDoc {
    if !half.in_progress() {
        warn(half.warning());
    }
    half.doc()
}
