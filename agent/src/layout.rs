//! The deployment root on disk, exactly as the official agent lays it out,
//! so a host can switch agents between two deployments:
//!
//! ```text
//! <root>/<group-id>/<deployment-id>/bundle.tar
//! <root>/<group-id>/<deployment-id>/deployment-archive/...
//! <root>/<group-id>/<deployment-id>/logs/scripts.log
//! <root>/deployment-instructions/<group-id>-cleanup
//! <root>/deployment-instructions/<group-id>-install.json
//! <root>/deployment-instructions/<group-id>_last_successful_install
//! <root>/deployment-instructions/<group-id>_most_recent_install
//! <root>/deployment-logs/<program>-deployments.log
//! ```

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

use crate::fsutil;

#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    pub program_name: String,
}

impl Layout {
    pub fn new(root: &Path, program_name: &str) -> Layout {
        Layout {
            root: root.to_path_buf(),
            program_name: program_name.to_string(),
        }
    }

    pub fn group_dir(&self, group: &str) -> PathBuf {
        self.root.join(group)
    }

    pub fn deployment_dir(&self, group: &str, deployment: &str) -> PathBuf {
        self.root.join(group).join(deployment)
    }

    pub fn instructions_dir(&self) -> PathBuf {
        self.root.join("deployment-instructions")
    }

    pub fn cleanup_file(&self, group: &str) -> PathBuf {
        self.instructions_dir().join(format!("{group}-cleanup"))
    }

    pub fn install_json(&self, group: &str) -> PathBuf {
        self.instructions_dir()
            .join(format!("{group}-install.json"))
    }

    pub fn last_successful_pointer(&self, group: &str) -> PathBuf {
        self.instructions_dir()
            .join(format!("{group}_last_successful_install"))
    }

    pub fn most_recent_pointer(&self, group: &str) -> PathBuf {
        self.instructions_dir()
            .join(format!("{group}_most_recent_install"))
    }

    pub fn deployment_log(&self) -> PathBuf {
        self.root
            .join("deployment-logs")
            .join(format!("{}-deployments.log", self.program_name))
    }

    /// Serialise work on one deployment group across processes (two local
    /// deployments, or the daemon and a local run, must not interleave).
    pub fn lock_group(&self, group: &str) -> io::Result<Flock<File>> {
        let dir = self.instructions_dir();
        fs::create_dir_all(&dir)?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(dir.join(format!(".{group}.lock")))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
    }
}

pub fn archive_dir(deployment_dir: &Path) -> PathBuf {
    deployment_dir.join("deployment-archive")
}

pub fn bundle_file(deployment_dir: &Path) -> PathBuf {
    deployment_dir.join("bundle.tar")
}

/// How DownloadBundle got the bundle (`downloaded` or `archive-reuse`), for
/// its completion message; the official 2.x keeps the same record.
pub fn bundle_source_file(deployment_dir: &Path) -> PathBuf {
    deployment_dir.join(".bundle-source")
}

pub fn scripts_log(deployment_dir: &Path) -> PathBuf {
    deployment_dir.join("logs").join("scripts.log")
}

/// Read a pointer file (the path of a deployment directory). A pointer to a
/// directory that no longer exists counts as none: operators do delete old
/// deployment directories by hand.
pub fn read_pointer(path: &Path) -> io::Result<Option<PathBuf>> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let p = PathBuf::from(s.trim_end_matches(['\n', '\r']));
            if p.as_os_str().is_empty() || !p.is_dir() {
                tracing::warn!(pointer = %path.display(), target = %p.display(), "pointer names a missing deployment directory; ignoring it");
                return Ok(None);
            }
            Ok(Some(p))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write a pointer as the Ruby agent does (the bare path, no newline),
/// atomically (the Ruby agent truncates and writes in place).
pub fn write_pointer(path: &Path, deployment_dir: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fsutil::write_atomic(
        path,
        deployment_dir.as_os_str().as_encoded_bytes(),
        0o644,
        fsutil::Durability::Atomic,
    )
}

/// Which entries of a group directory to delete so that at most
/// `max_revisions` remain once the current deployment is added: the oldest
/// by modification time, never the current one nor the last successful one
/// (the official rule, including its arithmetic).
pub fn select_for_removal(
    entries: &[(PathBuf, SystemTime)],
    current: &Path,
    last_successful: Option<&Path>,
    max_revisions: u32,
) -> Vec<PathBuf> {
    let mut others: Vec<&(PathBuf, SystemTime)> =
        entries.iter().filter(|(p, _)| p != current).collect();
    let extra = others.len() as i64 - i64::from(max_revisions) + 1;
    if extra <= 0 {
        return Vec::new();
    }
    if let Some(ls) = last_successful {
        others.retain(|(p, _)| p != ls);
    }
    others.sort_by_key(|(p, t)| (*t, p.clone()));
    others
        .into_iter()
        .take(extra as usize)
        .map(|(p, _)| p.clone())
        .collect()
}

/// Apply the retention rule to a group directory; returns what was removed.
pub fn prune(
    group_dir: &Path,
    current: &Path,
    last_successful: Option<&Path>,
    max_revisions: u32,
) -> io::Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    let rd = match fs::read_dir(group_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let mtime = e
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        entries.push((e.path(), mtime));
    }
    let doomed = select_for_removal(&entries, current, last_successful, max_revisions);
    for p in &doomed {
        tracing::info!(path = %p.display(), "removing old revision");
        fsutil::remove_tree(p)?;
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn retention_keeps_current_and_last_successful() {
        let e: Vec<(PathBuf, SystemTime)> = (1..=6)
            .map(|i| (PathBuf::from(format!("/g/d{i}")), at(i)))
            .collect();
        // Six existing plus the current one, keep five: remove two oldest.
        let cur = PathBuf::from("/g/d7");
        assert_eq!(
            select_for_removal(&e, &cur, None, 5),
            vec![PathBuf::from("/g/d1"), PathBuf::from("/g/d2")]
        );
        // The last successful deployment is never removed, even when oldest.
        let ls = PathBuf::from("/g/d1");
        assert_eq!(
            select_for_removal(&e, &cur, Some(&ls), 5),
            vec![PathBuf::from("/g/d2"), PathBuf::from("/g/d3")]
        );
        // The current directory is never a candidate even if already listed.
        let mut with_cur = e.clone();
        with_cur.push((cur.clone(), at(0)));
        assert!(!select_for_removal(&with_cur, &cur, None, 1).contains(&cur));
        assert!(select_for_removal(&e[..3], &cur, None, 5).is_empty());
    }

    #[test]
    fn pointers_round_trip_without_newline() {
        let d = tempfile::tempdir().unwrap();
        let dep = d.path().join("g").join("d-1");
        fs::create_dir_all(&dep).unwrap();
        let ptr = d
            .path()
            .join("deployment-instructions")
            .join("g_last_successful_install");
        write_pointer(&ptr, &dep).unwrap();
        assert_eq!(fs::read(&ptr).unwrap(), dep.as_os_str().as_encoded_bytes());
        assert_eq!(read_pointer(&ptr).unwrap(), Some(dep.clone()));
        fs::remove_dir(&dep).unwrap();
        assert_eq!(read_pointer(&ptr).unwrap(), None);
        // A Ruby-written pointer with a trailing newline reads the same.
        fs::create_dir_all(&dep).unwrap();
        fs::write(&ptr, format!("{}\n", dep.display())).unwrap();
        assert_eq!(read_pointer(&ptr).unwrap(), Some(dep));
    }
}
