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
//! <root>/ongoing-deployment/<deployment-id>          (running commands)
//! <root>/load-balancer/<group-id>.json               (drain journals)
//! <root>/load-balancer/<group-id>.log                (their audit logs)
//! <pid_dir>/<program>.pid                            (the service commands)
//! <pid_dir>/<program>.status.json                    (`codedeploy-agent status`)
//! ```
//!
//! and, inside a deployment directory, the agent's own records, each
//! a dot-file the official agents never read: `.prefetched-archive/`,
//! `.deployment-archive.partial/`, `.service-traffic-control`,
//! `.loadbalancer-drain-failed`, `.bundle-source`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

use crate::fsutil;

/// Entries of the deployment root that are not deployment groups: the
/// records, the deployment log, the command tracker's default place and the
/// load-balancer journals. A group named like one would share its folder
/// (retention would then prune the records as if they were revisions).
pub const RESERVED: [&str; 4] = [
    INSTRUCTIONS_DIR,
    LOGS_DIR,
    "ongoing-deployment",
    LOAD_BALANCER_DIR,
];

const INSTRUCTIONS_DIR: &str = "deployment-instructions";
const LOGS_DIR: &str = "deployment-logs";
/// The drain journals' folder (`hooks_builtin::journal::Store`).
const LOAD_BALANCER_DIR: &str = "load-balancer";

/// Why `group` cannot be a deployment group's folder under the root, if it
/// cannot. `tracking` is the configured command tracker's folder.
pub fn group_refusal(group: &str, tracking: &str) -> Option<String> {
    if group.is_empty() || group == "." || group == ".." || group.contains(['/', '\0']) {
        return Some(format!(
            "deployment group {group:?} must be a single directory name (no '/')"
        ));
    }
    (RESERVED.contains(&group) || group == tracking).then(|| {
        format!("deployment group {group:?} is the name of the deployment root's own folder {group}/; refusing to deploy into it")
    })
}

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
        self.root.join(INSTRUCTIONS_DIR)
    }

    /// The drain journals of the `loadBalancer` steps, one per group.
    pub fn load_balancer_dir(&self) -> PathBuf {
        self.root.join(LOAD_BALANCER_DIR)
    }

    /// The command tracker's folder (`:ongoing_deployment_tracking:`).
    pub fn tracker_dir(&self, tracking: &str) -> PathBuf {
        self.root.join(tracking)
    }

    pub fn cleanup_file(&self, group: &str) -> PathBuf {
        self.instructions_dir().join(format!("{group}-cleanup"))
    }

    /// The previous cleanup file while an install runs (ours only: it goes
    /// when the install ends, and the official agent never looks at it).
    pub fn previous_cleanup_file(&self, group: &str) -> PathBuf {
        self.instructions_dir()
            .join(format!("{group}-cleanup.previous"))
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
            .join(LOGS_DIR)
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

impl Layout {
    /// Remove what a process killed while working on `group` left behind:
    /// temporary record files (`<group>-install.json.tmp-<pid>`,
    /// `.<group>_….tmp-<pid>`) and half-unpacked archives
    /// (`<group>/<deployment>/.deployment-archive.partial`). Call it holding
    /// the group's lock: then no live process is writing any of them.
    pub fn sweep_leftovers(&self, group: &str) -> io::Result<usize> {
        let mut removed = 0;
        let is_temp = |n: &str| {
            let Some((head, pid)) = n.rsplit_once(".tmp-") else {
                return false;
            };
            pid.bytes().all(|b| b.is_ascii_digit())
                && !pid.is_empty()
                && (head == format!("{group}-install.json")
                    || head == format!(".{group}-cleanup")
                    || head
                        .strip_prefix('.')
                        .is_some_and(|h| h.strip_prefix(group).is_some_and(|r| r.starts_with('_'))))
        };
        if let Ok(rd) = fs::read_dir(self.instructions_dir()) {
            for e in rd.flatten() {
                if is_temp(&e.file_name().to_string_lossy()) {
                    fs::remove_file(e.path())?;
                    removed += 1;
                }
            }
        }
        // An install that crashed kept the previous cleanup file; the
        // current one lists all there is to remove.
        let previous = self.previous_cleanup_file(group);
        if fs::symlink_metadata(&previous).is_ok() {
            fs::remove_file(&previous)?;
            removed += 1;
        }
        if let Ok(rd) = fs::read_dir(self.group_dir(group)) {
            for e in rd.flatten() {
                let partial = staging_dir(&e.path());
                if fs::symlink_metadata(&partial).is_ok() {
                    fsutil::remove_tree(&partial)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Where the new revision waits between the deployment's first command
/// (which reads its appspec for the drain) and DownloadBundle.
pub fn prefetched_dir(deployment_dir: &Path) -> PathBuf {
    deployment_dir.join(".prefetched-archive")
}

/// Written at a deployment's BeforeBlockTraffic: its later commands know
/// the service controls traffic (docs/loadbalancer.md 2.6).
pub fn traffic_control_seen(deployment_dir: &Path) -> PathBuf {
    deployment_dir.join(".service-traffic-control")
}

/// Left by a drain that failed at the deployment's first command: when the
/// deployment ignores ApplicationStop failures the service goes on, and
/// the next command drains before it does anything (docs/loadbalancer.md 3.1).
pub fn drain_pending(deployment_dir: &Path) -> PathBuf {
    deployment_dir.join(".loadbalancer-drain-failed")
}

/// Where a bundle is unpacked before it is renamed into place.
pub fn staging_dir(deployment_dir: &Path) -> PathBuf {
    deployment_dir.join(".deployment-archive.partial")
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

/// The log file of each command in `:log_dir:`: the daemon's is named by
/// `:program_name:` as the official agent names it; `local`'s as
/// codedeploy-local names it; `lb plan`'s apart, so a plan never rotates
/// the daemon's log under it.
pub enum AgentLog {
    Daemon,
    Local,
    LbPlan,
}

pub fn agent_log(log_dir: &Path, program_name: &str, which: AgentLog) -> PathBuf {
    log_dir.join(match which {
        AgentLog::Daemon => format!("{program_name}.log"),
        AgentLog::Local => "codedeploy-local.log".to_string(),
        AgentLog::LbPlan => format!("{program_name}-lb-plan.log"),
    })
}

/// The daemon's pid file, as the official service commands name it.
pub fn pid_file(pid_dir: &Path, program_name: &str) -> PathBuf {
    pid_dir.join(format!("{program_name}.pid"))
}

/// The daemon's status record, for `codedeploy-agent status`, beside the
/// pid file.
pub fn status_file(pid_dir: &Path, program_name: &str) -> PathBuf {
    pid_dir.join(format!("{program_name}.status.json"))
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

    #[test]
    fn leftovers_of_a_killed_process_are_swept_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path(), "codedeploy-agent");
        let ins = l.instructions_dir();
        fs::create_dir_all(&ins).unwrap();
        let dep = l.deployment_dir("g1", "d-1");
        fs::create_dir_all(staging_dir(&dep).join("sub")).unwrap();
        fs::create_dir_all(archive_dir(&dep)).unwrap();
        for n in [
            "g1-install.json.tmp-123",
            ".g1_last_successful_install.tmp-77",
            ".g1-cleanup.tmp-8",
            "g1-cleanup.previous",
            "g1-install.json",
            "g1-cleanup",
            ".g1.lock",
            "g10-install.json.tmp-5",
            ".g2_most_recent_install.tmp-9",
            "g2-cleanup.previous",
        ] {
            fs::write(ins.join(n), "x").unwrap();
        }
        assert_eq!(l.sweep_leftovers("g1").unwrap(), 5);
        let mut left: Vec<String> = fs::read_dir(&ins)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".g1.lock",
                ".g2_most_recent_install.tmp-9",
                "g1-cleanup",
                "g1-install.json",
                "g10-install.json.tmp-5",
                "g2-cleanup.previous"
            ]
        );
        assert!(!staging_dir(&dep).exists() && archive_dir(&dep).exists());
    }

    #[test]
    fn groups_named_like_the_roots_own_folders_are_refused() {
        for g in RESERVED {
            assert!(group_refusal(g, "ongoing-deployment").is_some(), "{g}");
        }
        assert!(group_refusal("tracked", "tracked").is_some());
        assert!(group_refusal("../etc", "ongoing-deployment").is_some());
        assert!(group_refusal("a1b2c3d4-5678", "ongoing-deployment").is_none());
    }
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
