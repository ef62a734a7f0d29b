//! One lifecycle event: pick the revision its scripts come from, then run
//! them in order, stopping at the first failure.

pub mod logs;
pub mod runner;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use appspec::events::{self, Revision};

use crate::appspec_file::Cache;
use crate::config::Config;
use crate::diagnostics::{Diagnostics, ErrorCode, Tail};
use crate::layout::{self, Layout};
use crate::spec::DeploymentSpec;
use crate::users;
use runner::{Exit, Stream};

/// What running one event needs.
pub struct Context<'a> {
    pub config: &'a Config,
    /// The appspecs this command has read.
    pub appspecs: &'a Cache,
    pub layout: &'a Layout,
    pub spec: &'a DeploymentSpec,
    /// `<root>/<group>/<deployment>` of the deployment being executed.
    pub deployment_dir: &'a Path,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// Nothing to run, and why.
    NoScripts(String),
    Ran {
        scripts: usize,
        output_left_open: usize,
        from: PathBuf,
    },
}

/// The deployment directory whose revision the event's scripts come from.
fn revision_dir(event: &str, ctx: &Context) -> Result<Option<PathBuf>, Diagnostics> {
    let current = ctx.deployment_dir.to_path_buf();
    let current_archive = layout::archive_dir(&current);
    let group = &ctx.spec.deployment_group_id;
    let pointer =
        match events::revision_for(event, &ctx.spec.deployment_creator, ctx.spec.blue_green) {
            // The official agents use the current revision whenever its archive
            // is already in place, whatever the mapping says.
            _ if current_archive.is_dir() => return Ok(Some(current)),
            Revision::Current => return Ok(Some(current)),
            Revision::LastSuccessful => ctx.layout.last_successful_pointer(group),
            Revision::MostRecent => ctx.layout.most_recent_pointer(group),
        };
    layout::read_pointer(&pointer)
        .map_err(|e| Diagnostics::unknown(format!("cannot read {}: {e}", pointer.display())))
}

/// Run `event`'s scripts in order, stopping at the first failure.
pub fn run_event(
    event: &str,
    ctx: &Context,
    progress: &mut dyn FnMut(&str),
) -> Result<EventOutcome, Diagnostics> {
    let Some(dir) = revision_dir(event, ctx)? else {
        return Ok(EventOutcome::NoScripts(
            "no previous successful deployment".into(),
        ));
    };
    let archive = layout::archive_dir(&dir);
    if !archive.is_dir() {
        return Ok(EventOutcome::NoScripts(
            "the revision is not downloaded".into(),
        ));
    }
    let loaded = ctx.appspecs.get(&archive, &ctx.spec.appspec_filename)?;
    let scripts = loaded.spec.scripts(event);
    if scripts.is_empty() {
        return Ok(EventOutcome::NoScripts("no scripts".into()));
    }
    let mut log = EventLog::open(ctx);
    log.record(format!("LifecycleEvent - {event}"));
    let env = ctx.spec.script_env(event);
    let mut left_open = 0;
    for script in scripts {
        let loc = script.location.as_str();
        let ran = prepare(&archive, script).and_then(|(path, account)| {
            log.record(format!("Script - {loc}"));
            progress(loc);
            run_script(ctx.config, script, &path, account.as_ref(), &env, &mut log)
        });
        match ran {
            Ok(open) => left_open += usize::from(open),
            Err((code, message)) => {
                return Err(Diagnostics {
                    code,
                    script_name: loc.to_string(),
                    message,
                    log: log.tail.text(),
                })
            }
        }
    }
    Ok(EventOutcome::Ran {
        scripts: scripts.len(),
        output_left_open: left_open,
        from: dir,
    })
}

/// A script that cannot run or did not succeed: the code and the message.
type ScriptError = (ErrorCode, String);

/// The event's lines, to the script logs and to the tail diagnostics carry.
struct EventLog {
    logs: logs::ScriptLogs,
    tail: Tail,
}

impl EventLog {
    fn open(ctx: &Context) -> EventLog {
        let cfg = ctx.config;
        let deployments_log = cfg
            .enable_deployments_log
            .then(|| ctx.layout.deployment_log());
        EventLog {
            logs: logs::ScriptLogs::open(
                &layout::scripts_log(ctx.deployment_dir),
                deployments_log.as_deref(),
                &ctx.spec.deployment_id,
                cfg.time_zone,
                cfg.log_rotation,
            ),
            tail: Tail::default(),
        }
    }

    fn record(&mut self, entry: String) {
        self.logs.write(&entry);
        self.tail.push(entry + "\n");
    }
}

/// The script's file, made executable if it is not, and its `runas` user.
fn prepare(
    archive: &Path,
    script: &appspec::Script,
) -> Result<(PathBuf, Option<users::Account>), ScriptError> {
    let loc = script.location.as_str();
    let Some(path) = script_path(archive, loc) else {
        return Err((
            ErrorCode::ScriptMissing,
            format!("Script at specified location: {loc} is outside the revision"),
        ));
    };
    let meta = match fs::metadata(&path) {
        Ok(m) if m.is_file() => m,
        _ => {
            return Err((
                ErrorCode::ScriptMissing,
                format!(
                    "Script does not exist at specified location: {}",
                    path.display()
                ),
            ))
        }
    };
    if meta.permissions().mode() & 0o111 == 0 {
        tracing::warn!(
            script = loc,
            "script is not executable; making it executable"
        );
        let mode = meta.permissions().mode() | 0o111;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(|e| {
            (
                ErrorCode::ScriptNotExecutable,
                format!("Unable to set script at specified location: {loc} as executable: {e}"),
            )
        })?;
    }
    let account = match &script.runas {
        Some(name) => Some(users::account(name).map_err(|e| {
            (
                ErrorCode::ScriptFailed,
                format!("Script at specified location: {loc} cannot run as {name}: {e}"),
            )
        })?),
        None => None,
    };
    Ok((path, account))
}

/// Run one script; `Ok(true)` when it left its output open.
fn run_script(
    cfg: &Config,
    script: &appspec::Script,
    path: &Path,
    account: Option<&users::Account>,
    env: &[(String, String)],
    log: &mut EventLog,
) -> Result<bool, ScriptError> {
    let run_spec = runner::Spec {
        program: path,
        run_as: account,
        sudo: script.sudo,
        login_shell: cfg.runas_login_shell,
        env,
        timeout: Duration::from_secs(u64::from(script.timeout)),
        kill_grace: cfg.hook_kill_grace,
        output_grace: cfg.hook_output_grace,
    };
    let outcome = runner::run(&run_spec, &mut |stream, line| {
        let prefix = match stream {
            Stream::Stdout => "[stdout]",
            Stream::Stderr => "[stderr]",
        };
        log.record(format!("{prefix}{}", String::from_utf8_lossy(line)));
    });
    let loc = script.location.as_str();
    let who = match &script.runas {
        Some(u) => format!("{loc} run as user {u}"),
        None => loc.to_string(),
    };
    let outcome = outcome.map_err(|e| {
        (
            ErrorCode::ScriptFailed,
            format!("Script at specified location: {who} could not be started: {e}"),
        )
    })?;
    if outcome.output_left_open {
        log.record(
            "[agent]the script exited but a process it started still holds its output; not waiting for it".into(),
        );
    }
    judge(&outcome, &who, script.timeout, cfg.hook_kill_grace)?;
    Ok(outcome.output_left_open)
}

/// How a script that ran ended, in the official agents' words where they
/// have them; the duration goes to the log.
fn judge(o: &runner::Outcome, who: &str, timeout: u32, grace: Duration) -> Result<(), ScriptError> {
    let secs = o.duration.as_secs_f64();
    if o.timed_out {
        let how = match o.sent {
            Some(nix::sys::signal::Signal::SIGKILL) => format!(
                "killed with SIGKILL after SIGTERM and a {} s grace",
                grace.as_secs()
            ),
            _ => "SIGTERM was enough: the process group ended before the grace".to_string(),
        };
        return Err((
            ErrorCode::ScriptTimedOut,
            format!("Script at specified location: {who} failed to complete in {timeout} seconds ({how}; ran {secs:.1} s)"),
        ));
    }
    match o.exit {
        Exit::Code(0) => Ok(()),
        Exit::Code(c) => {
            tracing::info!(script = who, exit_code = c, secs, "script failed");
            Err((
                ErrorCode::ScriptFailed,
                format!("Script at specified location: {who} failed with exit code {c}"),
            ))
        }
        Exit::Signal(s) => {
            let name = nix::sys::signal::Signal::try_from(s)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| s.to_string());
            Err((
                ErrorCode::ScriptFailed,
                format!("Script at specified location: {who} was killed by signal {name} after {secs:.1} s"),
            ))
        }
    }
}

/// The script's path inside the revision; `None` if it climbs out.
fn script_path(archive: &Path, location: &str) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for c in Path::new(location).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            // Popping the last component climbs out of the revision.
            Component::ParentDir if !rel.pop() => return None,
            _ => {}
        }
    }
    Some(archive.join(rel))
}

/// How many scripts `event` would run, for the acknowledgement's no-op
/// flag. `None` when it cannot be told yet (nothing downloaded, unreadable
/// appspec): the command then runs and reports whatever it finds.
pub fn planned(event: &str, ctx: &Context) -> Option<usize> {
    let dir = revision_dir(event, ctx).ok()??;
    let loaded = ctx
        .appspecs
        .get(&layout::archive_dir(&dir), &ctx.spec.appspec_filename)
        .ok()?;
    Some(loaded.spec.scripts(event).len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_paths_stay_in_the_revision() {
        let a = Path::new("/arch");
        assert_eq!(
            script_path(a, "/scripts/start.sh"),
            Some(PathBuf::from("/arch/scripts/start.sh"))
        );
        assert_eq!(
            script_path(a, "scripts/../x.sh"),
            Some(PathBuf::from("/arch/x.sh"))
        );
        assert_eq!(script_path(a, "../../etc/x"), None);
    }
}
