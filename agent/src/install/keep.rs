//! The previous revision is kept until the new one is in place: before its
//! files are removed, each gets a hard link in a backup directory beside the
//! nearest directory that stays (one not listed in the cleanup file), so no
//! byte is copied and no space is needed; the directories' modes and owners
//! are noted. If the install then fails for any reason (ENOSPC or EDQUOT
//! midway, a file that cannot be written), the new files are removed and the
//! previous ones put back, with the previous cleanup file; on success the
//! backups go. The backups are listed in the cleanup file before they are
//! made, so a crash at any point leaves nothing the next deployment does not
//! remove.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ledger::{self, Entry};
use crate::fsutil;

/// Backup directories are named so (one per directory that stays).
const BACKUP: &str = ".codedeploy-previous";

struct Dir {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
}

pub struct Kept {
    /// (original, backup) for every previous file and symlink kept.
    links: Vec<(PathBuf, PathBuf)>,
    backups: Vec<PathBuf>,
    dirs: Vec<Dir>,
    /// The previous cleanup file, to put back on failure.
    cleanup: Vec<u8>,
}

impl Kept {
    /// Every path this adds to the host, for the cleanup file.
    pub fn listed(&self) -> impl Iterator<Item = &Path> {
        self.backups
            .iter()
            .map(PathBuf::as_path)
            .chain(self.links.iter().map(|(_, b)| b.as_path()))
    }

    /// The install succeeded: drop the backups.
    pub fn release(self) {
        for b in &self.backups {
            if let Err(e) = fsutil::remove_tree(b) {
                tracing::warn!(path = %b.display(), error = %e, "cannot remove the previous revision's backup; the next deployment's cleanup will");
            }
        }
    }

    /// The install failed: put the previous revision back.
    pub fn restore(self, cleanup_path: &Path) -> io::Result<usize> {
        let mut dirs: Vec<&Dir> = self.dirs.iter().collect();
        dirs.sort_by_key(|d| d.path.components().count());
        for d in dirs {
            match fs::create_dir(&d.path) {
                Ok(()) => {
                    std::os::unix::fs::lchown(&d.path, Some(d.uid), Some(d.gid))?;
                    fs::set_permissions(&d.path, fs::Permissions::from_mode(d.mode))?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let mut restored = 0;
        for (orig, backup) in &self.links {
            match fs::rename(backup, orig) {
                Ok(()) => restored += 1,
                Err(e) => {
                    tracing::warn!(path = %orig.display(), error = %e, "cannot put back a file of the previous revision")
                }
            }
        }
        for b in &self.backups {
            let _ = fsutil::remove_tree(b);
        }
        fsutil::write_atomic(
            cleanup_path,
            &self.cleanup,
            0o644,
            fsutil::Durability::Atomic,
        )?;
        Ok(restored)
    }
}

/// Keep the previous revision that `entries` (the cleanup file, `raw`)
/// lists. The backups are appended to the cleanup file before they exist.
pub fn keep(entries: &[Entry], raw: Vec<u8>, cleanup_path: &Path) -> io::Result<Kept> {
    let listed: HashSet<&Path> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Path(p) => Some(p.as_path()),
            Entry::Context(_) => None,
        })
        .collect();
    let mut plan: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    let mut dirs = Vec::new();
    for p in &listed {
        let Ok(m) = fs::symlink_metadata(p) else {
            continue;
        };
        if m.is_dir() {
            dirs.push(Dir {
                path: p.to_path_buf(),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            });
            continue;
        }
        // The nearest ancestor that is not ours stays through the cleanup.
        let Some(anchor) = p.ancestors().skip(1).find(|a| !listed.contains(a)) else {
            continue;
        };
        plan.entry(anchor.join(BACKUP))
            .or_default()
            .push(p.to_path_buf());
    }
    let mut kept = Kept {
        links: Vec::new(),
        backups: Vec::new(),
        dirs,
        cleanup: raw,
    };
    let mut names = Vec::new();
    for (backup, files) in &plan {
        names.push(backup.clone());
        for (i, _) in files.iter().enumerate() {
            names.push(backup.join(i.to_string()));
        }
    }
    // Listed first: a crash from here on leaves them to the next cleanup.
    let mut w = ledger::Writer::append(cleanup_path)?;
    for n in &names {
        w.path(n)?;
    }
    w.finish()?;
    for (backup, files) in plan {
        match fs::create_dir(&backup) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A crashed run's backup: the cleanup file lists it too.
                fsutil::remove_tree(&backup)?;
                fs::create_dir(&backup)?;
            }
            Err(e) => return Err(e),
        }
        fs::set_permissions(&backup, fs::Permissions::from_mode(0o700))?;
        for (i, f) in files.into_iter().enumerate() {
            let b = backup.join(i.to_string());
            match fs::hard_link(&f, &b) {
                Ok(()) => kept.links.push((f, b)),
                // Another filesystem below a directory of ours: this file
                // cannot be put back if the install fails.
                Err(e) => {
                    tracing::warn!(path = %f.display(), error = %e, "cannot keep a file of the previous revision")
                }
            }
        }
        kept.backups.push(backup);
    }
    Ok(kept)
}
