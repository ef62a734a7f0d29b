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
use std::path::PathBuf;

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

/// The size of a revision entry, looked up relative to its directory.
fn size_of(archive: &ArchiveTree, src: u32, dir: &mut Option<(u32, std::fs::File)>) -> u64 {
    let parent = archive.parent(src);
    if dir.as_ref().map(|d| d.0) != Some(parent) {
        *dir = crate::fsutil::open_dir(&archive.full_path(parent))
            .ok()
            .map(|f| (parent, f));
    }
    let Some((_, f)) = dir else { return 0 };
    let name = std::ffi::OsStr::from_bytes(archive.name(src));
    nix::sys::stat::fstatat(&*f, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map(|st| st.st_size as u64)
        .unwrap_or(0)
}

/// What one worker of `check` has seen: the needs of its share of the plan,
/// and the look-ups neighbours share (a directory's device and handle).
#[derive(Default)]
struct Tally {
    /// Device -> (a directory on it, for `statvfs`; what lands there).
    needs: HashMap<u64, (PathBuf, Need)>,
    /// Plan directory -> the device what is created in it lands on.
    devices: HashMap<u32, Option<u64>>,
    src_dir: Option<(u32, std::fs::File)>,
}

impl Tally {
    fn add(&mut self, plan: &InstallPlan, archive: &ArchiveTree, id: u32) {
        let bytes = match plan.kind(id) {
            DKind::Create => 0,
            DKind::Copy { src, .. } => {
                size_of(archive, src, &mut self.src_dir).div_ceil(4096) * 4096
            }
            DKind::Existing | DKind::Keep => return,
        };
        let Some(dev) = self.device(plan, plan.parent(id)) else {
            return;
        };
        let need = &mut self.needs.get_mut(&dev).expect("noted with its device").1;
        need.bytes += bytes;
        need.inodes += 1;
    }

    /// The device of a plan directory: that of the directory itself if it
    /// exists, else of the nearest ancestor that does (what the plan
    /// creates lands there). One `stat` per existing directory.
    fn device(&mut self, plan: &InstallPlan, dir: u32) -> Option<u64> {
        let mut missing = Vec::new();
        let mut cur = dir;
        let dev = loop {
            if let Some(d) = self.devices.get(&cur) {
                break *d;
            }
            if plan.kind(cur) == DKind::Existing {
                let path = plan.path(cur);
                let dev = std::fs::metadata(&path).ok().map(|m| m.dev());
                if let Some(d) = dev {
                    self.needs.entry(d).or_insert((path, Need::default()));
                }
                self.devices.insert(cur, dev);
                break dev;
            }
            missing.push(cur);
            cur = plan.parent(cur);
        };
        for m in missing {
            self.devices.insert(m, dev);
        }
        dev
    }
}

/// Check every destination filesystem; `Err` names the first that is short.
pub fn check(plan: &InstallPlan, archive: &ArchiveTree) -> Result<(), String> {
    // One stat per file to copy, which on a tmpfs costs as much as the
    // rest of the plan: spread over the cores like the copy itself.
    let tallies = crate::fsutil::parallel_fold(
        plan.len(),
        crate::fsutil::workers(),
        1024,
        Tally::default,
        |t, ids| {
            for id in ids {
                t.add(plan, archive, id as u32);
            }
            Ok::<(), std::convert::Infallible>(())
        },
    )
    .unwrap_or_else(|never| match never {});
    let mut needs: HashMap<u64, (PathBuf, Need)> = HashMap::new();
    for (dev, (probe, need)) in tallies.into_iter().flat_map(|t| t.needs) {
        let e = needs.entry(dev).or_insert((probe, Need::default()));
        e.1.bytes += need.bytes;
        e.1.inodes += need.inodes;
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
