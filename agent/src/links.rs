//! The rule every symlink of a revision obeys, for the unpacker
//! (`revision::safe_writer`) and the install plan (`install::plan`) alike:
//! its target is relative and never leaves the root it is unpacked or
//! installed under. Pure.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// Why the link at `rel` (relative to the root) with `target` could leave
/// the root, or `None` when it cannot: `..` only as leading components, and
/// no more of them than the link's depth.
pub fn outside_root(rel: &Path, target: &[u8]) -> Option<String> {
    let shown = String::from_utf8_lossy(target);
    if target.is_empty() || target.contains(&0) {
        return Some("the symlink has an empty or invalid target".into());
    }
    let t = Path::new(OsStr::from_bytes(target));
    if t.is_absolute() {
        return Some(format!(
            "the symlink points to the absolute path {shown}, outside the revision"
        ));
    }
    let depth = rel.components().count() as i64 - 1;
    let mut ups = 0i64;
    let mut seen_normal = false;
    for c in t.components() {
        match c {
            Component::ParentDir if seen_normal => {
                return Some(format!(
                    "the symlink target {shown} climbs with '..' after a directory name, which could leave the revision through another link"
                ))
            }
            Component::ParentDir => ups += 1,
            Component::Normal(_) => seen_normal = true,
            _ => {}
        }
    }
    (ups > depth).then(|| format!("the symlink target {shown} points outside the revision"))
}
