//! One lifecycle event: pick the revision its scripts come from, then run
//! them in order, stopping at the first failure.

pub mod logs;
pub mod runner;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use appspec::events::{self, Revision};
use appspec::{AppSpec, Os};

use crate::config::Config;
use crate::diagnostics::{Diagnostics, ErrorCode, Tail};
use crate::layout::{self, Layout};
use crate::spec::DeploymentSpec;
use crate::users;
use runner::{Exit, Stream};

pub struct Context<'a> {
    pub config: &'a Config,
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

/// Find the appspec in a revision, trying `appspec::candidates` in order.
pub fn find_appspec(archive: &Path, requested: &str) -> Option<PathBuf> {
    appspec::candidates(requested)
        .iter()
        .map(|n| archive.join(n))
        .find(|p| p.is_file())
}

/// Read the revision's appspec. Its warnings are logged by Install only,
/// so each is logged once per deployment (every command reads the appspec).
pub fn load_appspec(archive: &Path, requested: &str) -> Result<(AppSpec, String), Diagnostics> {
    load(archive, requested, false)
}

/// `load_appspec`, logging the appspec's warnings.
pub fn load_appspec_warning(
    archive: &Path,
    requested: &str,
) -> Result<(AppSpec, String), Diagnostics> {
    load(archive, requested, true)
}

fn load(archive: &Path, requested: &str, warn: bool) -> Result<(AppSpec, String), Diagnostics> {
    let (parsed, path) = parse_appspec(archive, requested)?;
    for w in parsed.warnings.iter().filter(|_| warn) {
        tracing::warn!(appspec = %path.display(), "{w}");
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((parsed.spec, name))
}

/// Find, read and parse the appspec, without reporting its warnings (the
/// command that uses it reports them once).
fn parse_appspec(
    archive: &Path,
    requested: &str,
) -> Result<(appspec::Parsed, PathBuf), Diagnostics> {
    let Some(path) = find_appspec(archive, requested) else {
        return Err(Diagnostics::unknown(format!(
            "The CodeDeploy agent did not find an AppSpec file within the unpacked revision directory at revision-relative path \"{requested}\". The revision was unpacked to directory \"{}\"",
            archive.display()
        )));
    };
    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if size > appspec::MAX_APPSPEC_BYTES {
        return Err(Diagnostics::unknown(format!(
            "{} is {size} bytes; an appspec may be at most {} bytes",
            path.display(),
            appspec::MAX_APPSPEC_BYTES
        )));
    }
    let text = fs::read_to_string(&path)
        .map_err(|e| Diagnostics::unknown(format!("cannot read {}: {e}", path.display())))?;
    let parsed = appspec::parse(&text, &path.display().to_string(), Os::Linux)
        .map_err(|e| Diagnostics::unknown(e.to_string()))?;
    Ok((parsed, path))
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
    let (spec, _) = load_appspec(&archive, &ctx.spec.appspec_filename)?;
    let scripts = spec.scripts(event);
    if scripts.is_empty() {
        return Ok(EventOutcome::NoScripts("no scripts".into()));
    }
    let cfg = ctx.config;
    let deployments_log = cfg
        .enable_deployments_log
        .then(|| ctx.layout.deployment_log());
    let mut logs = logs::ScriptLogs::open(
        &layout::scripts_log(ctx.deployment_dir),
        deployments_log.as_deref(),
        &ctx.spec.deployment_id,
        cfg.time_zone,
    );
    let mut tail = Tail::default();
    let record = |logs: &mut logs::ScriptLogs, tail: &mut Tail, entry: String| {
        logs.write(&entry);
        tail.push(entry + "\n");
    };
    record(&mut logs, &mut tail, format!("LifecycleEvent - {event}"));
    let env = ctx.spec.script_env(event);
    let mut left_open = 0;
    for script in scripts {
        let loc = script.location.as_str();
        let fail = |code, message: String, tail: &Tail| Diagnostics {
            code,
            script_name: loc.to_string(),
            message,
            log: tail.text(),
        };
        let path = match script_path(&archive, loc) {
            Some(p) => p,
            None => {
                return Err(fail(
                    ErrorCode::ScriptMissing,
                    format!("Script at specified location: {loc} is outside the revision"),
                    &tail,
                ));
            }
        };
        let meta = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            _ => {
                return Err(fail(
                    ErrorCode::ScriptMissing,
                    format!(
                        "Script does not exist at specified location: {}",
                        path.display()
                    ),
                    &tail,
                ));
            }
        };
        if meta.permissions().mode() & 0o111 == 0 {
            tracing::warn!(
                script = loc,
                "script is not executable; making it executable"
            );
            let mode = meta.permissions().mode() | 0o111;
            if let Err(e) = fs::set_permissions(&path, fs::Permissions::from_mode(mode)) {
                return Err(fail(
                    ErrorCode::ScriptNotExecutable,
                    format!("Unable to set script at specified location: {loc} as executable: {e}"),
                    &tail,
                ));
            }
        }
        let account = match &script.runas {
            Some(name) => match users::account(name) {
                Ok(a) => Some(a),
                Err(e) => {
                    return Err(fail(
                        ErrorCode::ScriptFailed,
                        format!("Script at specified location: {loc} cannot run as {name}: {e}"),
                        &tail,
                    ));
                }
            },
            None => None,
        };
        record(&mut logs, &mut tail, format!("Script - {loc}"));
        progress(loc);
        let run_spec = runner::Spec {
            program: &path,
            run_as: account.as_ref(),
            sudo: script.sudo,
            login_shell: cfg.runas_login_shell,
            env: &env,
            timeout: Duration::from_secs(u64::from(script.timeout)),
            kill_grace: cfg.hook_kill_grace,
            output_grace: cfg.hook_output_grace,
        };
        let outcome = runner::run(&run_spec, &mut |stream, line| {
            let prefix = match stream {
                Stream::Stdout => "[stdout]",
                Stream::Stderr => "[stderr]",
            };
            record(
                &mut logs,
                &mut tail,
                format!("{prefix}{}", String::from_utf8_lossy(line)),
            );
        });
        let who = match &script.runas {
            Some(u) => format!("{loc} run as user {u}"),
            None => loc.to_string(),
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                return Err(fail(
                    ErrorCode::ScriptFailed,
                    format!("Script at specified location: {who} could not be started: {e}"),
                    &tail,
                ))
            }
        };
        let secs = outcome.duration.as_secs_f64();
        if outcome.output_left_open {
            left_open += 1;
            record(
                &mut logs,
                &mut tail,
                "[agent]the script exited but a process it started still holds its output; not waiting for it".into(),
            );
        }
        if outcome.timed_out {
            let how = match outcome.sent {
                Some(nix::sys::signal::Signal::SIGKILL) => format!(
                    "killed with SIGKILL after SIGTERM and a {} s grace",
                    cfg.hook_kill_grace.as_secs()
                ),
                _ => "SIGTERM was enough: the process group ended before the grace".to_string(),
            };
            return Err(fail(
                ErrorCode::ScriptTimedOut,
                format!("Script at specified location: {who} failed to complete in {} seconds ({how}; ran {secs:.1} s)", script.timeout),
                &tail,
            ));
        }
        match outcome.exit {
            Exit::Code(0) => {}
            Exit::Code(c) => {
                // The official agents' words exactly; the duration is logged.
                tracing::info!(script = loc, exit_code = c, secs, "script failed");
                return Err(fail(
                    ErrorCode::ScriptFailed,
                    format!("Script at specified location: {who} failed with exit code {c}"),
                    &tail,
                ));
            }
            Exit::Signal(s) => {
                let name = nix::sys::signal::Signal::try_from(s)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| s.to_string());
                return Err(fail(ErrorCode::ScriptFailed, format!("Script at specified location: {who} was killed by signal {name} after {secs:.1} s"), &tail));
            }
        }
    }
    Ok(EventOutcome::Ran {
        scripts: scripts.len(),
        output_left_open: left_open,
        from: dir,
    })
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
    let (parsed, _) = parse_appspec(&layout::archive_dir(&dir), &ctx.spec.appspec_filename).ok()?;
    Some(parsed.spec.scripts(event).len())
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
