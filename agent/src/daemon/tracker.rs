//! Commands in progress, on disk, so a restart after a crash can report
//! them failed instead of leaving the deployment to time out. Same place and
//! format as the Ruby agent (`deployment_command_tracker.rb`): one file per
//! deployment under `<root>/<ongoing_deployment_tracking>/`, named by the
//! deployment id, holding the host command identifier.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::fsutil::{self, Durability};

pub struct Tracker {
    dir: PathBuf,
}

impl Tracker {
    pub fn new(dir: PathBuf) -> Tracker {
        Tracker { dir }
    }

    pub fn begin(&self, deployment_id: &str, host_command_id: &str) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        // Atomic, not synced: the record is for the agent's own death (a
        // crash, a kill, a restart), which the page cache survives. The
        // Ruby agent writes it with a plain File.write; after a power loss
        // that lost it, the service times the command out, as for that
        // agent. Two fsyncs here were most of a lifecycle event's own time
        // (tests/examples/daemon_bench.rs).
        fsutil::write_atomic(
            &self.dir.join(deployment_id),
            host_command_id.as_bytes(),
            0o644,
            Durability::Atomic,
        )
    }

    pub fn end(&self, deployment_id: &str) {
        let _ = fs::remove_file(self.dir.join(deployment_id));
    }

    /// Commands that were running when the agent stopped: (deployment id,
    /// host command id). Newest first.
    pub fn interrupted(&self) -> Vec<(String, String)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<(std::time::SystemTime, String, String)> = rd
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    return None;
                }
                let id = fs::read_to_string(e.path()).ok()?.trim().to_string();
                let t = e.metadata().and_then(|m| m.modified()).ok()?;
                (!id.is_empty()).then_some((t, name, id))
            })
            .collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.0));
        v.into_iter().map(|(_, d, c)| (d, c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_until_ended() {
        let t = tempfile::tempdir().unwrap();
        let tr = Tracker::new(t.path().join("ongoing-deployment"));
        assert!(tr.interrupted().is_empty());
        tr.begin("d-1", "hc-1").unwrap();
        tr.begin("d-2", "hc-2").unwrap();
        let mut got = tr.interrupted();
        got.sort();
        assert_eq!(
            got,
            vec![("d-1".into(), "hc-1".into()), ("d-2".into(), "hc-2".into())]
        );
        tr.end("d-1");
        assert_eq!(tr.interrupted(), vec![("d-2".into(), "hc-2".into())]);
    }
}
