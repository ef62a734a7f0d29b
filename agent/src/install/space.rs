//! Room for a revision, checked before the previous one is touched: a
//! destination filesystem too small for the new files fails the install
//! while the running revision is still whole (the official agent removes
//! the old files first and leaves an empty destination behind on ENOSPC).
//!
//! The check is conservative: the previous revision's files are counted as
//! still there, so a full disk never sits between "old removed" and "new
//! copied"; a replaced file's temporary copy is counted too.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::archive_tree::ArchiveTree;
use super::plan::{DKind, InstallPlan};

/// What the install will add to one filesystem.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub bytes: u64,
    pub inodes: u64,
}

/// Space kept free on top of the need: 1 % of the filesystem, within
/// 64 KiB and 64 MiB, so the host has room to log and work afterwards.
pub fn margin(fs_bytes: u64) -> u64 {
    (fs_bytes / 100).clamp(64 << 10, 64 << 20)
}

/// Is `need` more than a filesystem with `avail` free bytes, `favail` free
/// inodes and `size` bytes in all can take? Returns why.
pub fn shortfall(need: Need, avail: u64, favail: u64, size: u64) -> Option<String> {
    let keep = margin(size);
    if need.bytes.saturating_add(keep) > avail {
        return Some(format!(
            "needs {} and {} more must stay free, {} are free",
            human(need.bytes),
            human(keep),
            human(avail)
        ));
    }
    (need.inodes > favail).then(|| format!("needs {} inodes, {favail} are free", need.inodes))
}

fn human(b: u64) -> String {
    match b {
        0..=9_999 => format!("{b} bytes"),
        10_000..=9_999_999 => format!("{:.1} kB", b as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.1} GB", b as f64 / 1e9),
    }
}

/// The filesystem (device) a path would be created on: that of its
/// nearest existing ancestor.
fn device_of(p: &Path, cache: &mut HashMap<PathBuf, (u64, PathBuf)>) -> Option<(u64, PathBuf)> {
    let mut cur = p.parent()?.to_path_buf();
    let mut walked = Vec::new();
    let found = loop {
        if let Some(hit) = cache.get(&cur) {
            break hit.clone();
        }
        match std::fs::metadata(&cur) {
            Ok(m) => break (m.dev(), cur.clone()),
            Err(_) => {
                walked.push(cur.clone());
                cur = cur.parent()?.to_path_buf();
            }
        }
    };
    cache.insert(cur, found.clone());
    for w in walked {
        cache.insert(w, found.clone());
    }
    Some(found)
}

/// The size of a revision entry, looked up relative to its directory.
fn size_of(archive: &ArchiveTree, src: u32, dir: &mut Option<(u32, std::fs::File)>) -> u64 {
    let parent = archive.parent(src);
    if dir.as_ref().map(|d| d.0) != Some(parent) {
        *dir = std::fs::File::open(archive.full_path(parent))
            .ok()
            .map(|f| (parent, f));
    }
    let Some((_, f)) = dir else { return 0 };
    let name = std::ffi::OsStr::from_bytes(archive.name(src));
    nix::sys::stat::fstatat(&*f, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map(|st| st.st_size as u64)
        .unwrap_or(0)
}

/// Check every destination filesystem; `Err` names the first that is short.
pub fn check(plan: &InstallPlan, archive: &ArchiveTree) -> Result<(), String> {
    let mut cache = HashMap::new();
    let mut needs: HashMap<u64, (PathBuf, Need)> = HashMap::new();
    // Neighbours share a directory: its device and handle are found once.
    let mut device_by_parent: HashMap<u32, Option<(u64, PathBuf)>> = HashMap::new();
    let mut src_dir = None;
    for id in plan.ids() {
        let bytes = match plan.kind(id) {
            DKind::Create => 0,
            DKind::Copy { src, .. } => size_of(archive, src, &mut src_dir).div_ceil(4096) * 4096,
            DKind::Existing | DKind::Keep => continue,
        };
        let found = device_by_parent
            .entry(plan.parent(id))
            .or_insert_with(|| device_of(&plan.path(id), &mut cache));
        let Some((dev, probe)) = found else {
            continue;
        };
        let e = needs
            .entry(*dev)
            .or_insert((probe.clone(), Need::default()));
        e.1.bytes += bytes;
        e.1.inodes += 1;
    }
    for (probe, need) in needs.values() {
        let Ok(s) = nix::sys::statvfs::statvfs(probe) else {
            continue;
        };
        let frsize = s.fragment_size();
        let avail = s.blocks_available() * frsize;
        let size = s.blocks() * frsize;
        // Filesystems without inode accounting (btrfs, some FUSE) report 0.
        let favail = match s.files() {
            0 => u64::MAX,
            _ => s.files_available(),
        };
        if let Some(why) = shortfall(*need, avail, favail, size) {
            return Err(format!(
                "not enough space for the new revision on the filesystem of {}: it {why}; nothing was removed or installed",
                probe.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_need_and_its_margin_must_fit() {
        let n = Need {
            bytes: 1 << 20,
            inodes: 10,
        };
        assert_eq!(shortfall(n, 2 << 20, 100, 100 << 20), None);
        assert!(shortfall(n, (1 << 20) + 1000, 100, 100 << 20).is_some());
        assert!(shortfall(n, 2 << 20, 5, 100 << 20)
            .unwrap()
            .contains("inodes"));
        assert_eq!(margin(1 << 40), 64 << 20);
        assert_eq!(margin(1 << 20), 64 << 10);
    }
}
