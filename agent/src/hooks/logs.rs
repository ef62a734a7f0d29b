//! `scripts.log` (per deployment) and the shared deployments log, in the
//! official formats, written line by line as scripts print.

use std::io::Write;
use std::path::Path;

use crate::config::TimeZone;
use crate::logfile::{LogFile, Rotation};

pub fn timestamp(tz: TimeZone, millis: bool) -> String {
    let fmt = if millis {
        "%Y-%m-%d %H:%M:%S%.3f"
    } else {
        "%Y-%m-%d %H:%M:%S"
    };
    match tz {
        TimeZone::Local => chrono::Local::now().format(fmt).to_string(),
        TimeZone::Utc => chrono::Utc::now().format(fmt).to_string(),
    }
}

pub struct ScriptLogs {
    scripts: Option<LogFile>,
    deployments: Option<LogFile>,
    deployment_id: String,
    tz: TimeZone,
}

impl ScriptLogs {
    /// Failing to open a log must not fail the deployment; it is reported.
    pub fn open(
        scripts_log: &Path,
        deployments_log: Option<&Path>,
        deployment_id: &str,
        tz: TimeZone,
        rotation: Rotation,
    ) -> ScriptLogs {
        let open_append = |p: &Path| LogFile::open(p, rotation);
        let scripts = open_append(scripts_log)
            .map_err(|e| tracing::warn!(path = %scripts_log.display(), error = %e, "cannot open scripts.log"))
            .ok();
        let deployments = deployments_log.and_then(|p| {
            open_append(p).map_err(|e| tracing::warn!(path = %p.display(), error = %e, "cannot open the deployments log")).ok()
        });
        ScriptLogs {
            scripts,
            deployments,
            deployment_id: deployment_id.to_string(),
            tz,
        }
    }

    /// One entry: `YYYY-MM-DD HH:MM:SS <entry>` in scripts.log and
    /// `[... .mmm] [<deployment>]<entry>` in the deployments log.
    pub fn write(&mut self, entry: &str) {
        if let Some(f) = &mut self.scripts {
            // One write per line, so rotation never splits one.
            let _ = f.write_all(format!("{} {entry}\n", timestamp(self.tz, false)).as_bytes());
        }
        if let Some(f) = &mut self.deployments {
            let line = format!(
                "[{}] [{}]{}\n",
                timestamp(self.tz, true),
                self.deployment_id,
                entry.trim()
            );
            let _ = f.write_all(line.as_bytes());
        }
    }
}
