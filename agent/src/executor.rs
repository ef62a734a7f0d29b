//! One host command (DownloadBundle, Install, or a lifecycle event) for one
//! deployment, against the deployment root. The daemon and `local` share it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use appspec::{events, FileExistsBehavior};

use crate::config::Config;
use crate::diagnostics::Diagnostics;
use crate::hooks::{self, EventOutcome};
use crate::install;
use crate::layout::{self, Layout};
use crate::revision;
use crate::spec::{BundleType, DeploymentSpec, RevisionSource};

pub struct Executor<'a> {
    pub config: &'a Config,
    pub layout: Layout,
    /// Where relative appspec destinations resolve (the agent's cwd).
    pub cwd: PathBuf,
    /// Downloads remote (S3, GitHub) bundles; `None` refuses them.
    pub fetcher: Option<&'a dyn Fetcher>,
    /// Takes the host out of its load balancers and puts it back (the
    /// daemon on EC2); `None`: a `loadBalancer` section is not acted on.
    pub traffic: Option<&'a dyn Traffic>,
}

/// The native `loadBalancer` actions, blocking like `Fetcher`.
pub trait Traffic: Sync {
    fn drain(
        &self,
        spec: &DeploymentSpec,
        lb: &appspec::load_balancer::LoadBalancer,
    ) -> Result<String, Diagnostics>;
    /// The stop scripts are about to run.
    fn stopping(&self, spec: &DeploymentSpec);
    /// Is this deployment's group out of service by our doing?
    fn pending(&self, spec: &DeploymentSpec) -> bool;
    /// A command of this deployment arrived: re-arm `abandonAfter` if the
    /// group is out of service for it (one journal write).
    fn touch(&self, spec: &DeploymentSpec);
    fn restore(
        &self,
        spec: &DeploymentSpec,
        why: hooks_builtin::Why,
    ) -> Result<Option<String>, Diagnostics>;
}

const BUNDLE_DOWNLOADED: &str = "downloaded";
const BUNDLE_REUSED: &str = "archive-reuse";

/// Brings a remote bundle to a file. Blocking: the executor runs on a
/// worker thread; the daemon's implementation drives its async clients.
pub trait Fetcher: Sync {
    /// Write the bundle to `dest`; returns a summary for the log.
    fn fetch(&self, revision: &RevisionSource, dest: &Path) -> Result<String, String>;
}

/// What a successful command did, for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Nothing to do (no scripts, no previous revision ...).
    pub skipped: bool,
    pub summary: String,
    /// The completion's message when it is not the plain "Succeeded"
    /// (DownloadBundle says where the bundle came from, as the official 2.x).
    pub completion: Option<String>,
}

impl Report {
    fn done(summary: String) -> Report {
        Report {
            skipped: false,
            summary,
            completion: None,
        }
    }
}

impl<'a> Executor<'a> {
    pub fn new(config: &'a Config) -> Executor<'a> {
        Executor {
            config,
            layout: Layout::new(&config.root_dir, &config.program_name),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            fetcher: None,
            traffic: None,
        }
    }

    pub fn deployment_dir(&self, spec: &DeploymentSpec) -> PathBuf {
        self.layout
            .deployment_dir(&spec.deployment_group_id, &spec.deployment_id)
    }

    fn context<'b>(&'b self, spec: &'b DeploymentSpec, dir: &'b Path) -> hooks::Context<'b> {
        hooks::Context {
            config: self.config,
            layout: &self.layout,
            spec,
            deployment_dir: dir,
        }
    }

    /// For the acknowledgement: does this command do nothing here?
    pub fn is_noop(&self, command: &str, spec: &DeploymentSpec) -> bool {
        if matches!(command, "DownloadBundle" | "Install") {
            return false;
        }
        // The first command may drain (the new revision's appspec decides,
        // and it is not here yet); ValidateService restores what was.
        if let Some(t) = self.traffic {
            let events = self.lifecycle(spec, &self.deployment_dir(spec), command);
            if command == hooks_builtin::drain_event(&events)
                || (command == "ValidateService" && t.pending(spec))
            {
                return false;
            }
        }
        let dir = self.deployment_dir(spec);
        let ctx = self.context(spec, &dir);
        hooks::planned(command, &ctx) == Some(0)
    }

    pub fn execute(
        &self,
        command: &str,
        spec: &DeploymentSpec,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Report, Diagnostics> {
        if let Some(why) = layout::group_refusal(
            &spec.deployment_group_id,
            &self.config.ongoing_deployment_tracking,
        ) {
            return Err(Diagnostics::unknown(why));
        }
        match self.layout.sweep_leftovers(&spec.deployment_group_id) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(group = %spec.deployment_group_id, removed = n, "removed what an interrupted run left")
            }
            Err(e) => {
                tracing::warn!(group = %spec.deployment_group_id, error = %e, "cannot remove what an interrupted run left")
            }
        }
        let dir = self.deployment_dir(spec);
        fs::create_dir_all(&dir).map_err(|e| {
            Diagnostics::unknown(format!(
                "Error creating deployment root directory {}: {e}",
                dir.display()
            ))
        })?;
        if command == "BeforeBlockTraffic" {
            let _ = fs::write(layout::traffic_control_seen(&dir), "");
        }
        let result = self.drain_before(command, spec, &dir).and_then(|drained| {
            let r = match command {
                "DownloadBundle" => self.download_bundle(spec, &dir),
                "Install" => self.install(spec, &dir),
                event => self.scripts(event, spec, &dir, progress),
            };
            r.map(|mut report| {
                if let Some(s) = drained {
                    report.summary = format!("loadBalancer: {s}; {}", report.summary);
                    report.skipped = false;
                }
                report
            })
        });
        let Some(t) = self.traffic else {
            return result;
        };
        t.touch(spec);
        match result {
            Err(mut d) if t.pending(spec) => {
                // onFailure decides, inside this command, before it is reported.
                match t.restore(spec, hooks_builtin::Why::Failed) {
                    Ok(Some(s)) => d.log.push_str(&format!("\nloadBalancer: {s}")),
                    Ok(None) => {}
                    Err(r) => d.log.push_str(&format!(
                        "\nloadBalancer:restore after the failure also failed: {}\n{}",
                        r.message, r.log
                    )),
                }
                Err(d)
            }
            Ok(mut report) if command == "ValidateService" && t.pending(spec) => {
                if let Some(s) = t.restore(spec, hooks_builtin::Why::Validated)? {
                    report.summary.push_str(&format!("; loadBalancer: {s}"));
                    report.skipped = false;
                }
                Ok(report)
            }
            other => other,
        }
    }

    /// The drain, before `command` does anything: at the deployment's
    /// first command when the new revision asks for it (fetched and
    /// unpacked now, while the host still serves, for its appspec), or at
    /// the next command when that drain failed and the deployment went on
    /// (ApplicationStop failures ignored); failing then fails the command.
    fn drain_before(
        &self,
        command: &str,
        spec: &DeploymentSpec,
        dir: &Path,
    ) -> Result<Option<String>, Diagnostics> {
        let Some(t) = self.traffic else {
            return Ok(None);
        };
        let events = self.lifecycle(spec, dir, command);
        let first = hooks_builtin::drain_event(&events);
        let marker = layout::drain_pending(dir);
        if command == first {
            // A revision that cannot be fetched or read here has no section
            // to act on: DownloadBundle fetches it again and fails there with
            // the precise error, where the official agent reports it.
            let archive = match self.prefetch(spec, dir) {
                Ok(a) => a,
                Err(d) => {
                    tracing::warn!(deployment = %spec.deployment_id, error = %d.message, "cannot fetch the new revision early; loadBalancer not read");
                    return Ok(None);
                }
            };
            let result = self.drain_from(t, first, &events, spec, &archive);
            if result.is_err() {
                // Kept so the next command, if the service sends one, drains
                // before it installs anything.
                let _ = fs::write(&marker, first);
            }
            return result;
        }
        if !marker.exists() {
            return Ok(None);
        }
        tracing::warn!(deployment = %spec.deployment_id, command, failed_at = first, "the deployment went on after the loadBalancer drain failed: draining before this command");
        let archive = self.prefetch(spec, dir)?;
        let drained = self.drain_from(t, first, &events, spec, &archive)?;
        let _ = fs::remove_file(&marker);
        Ok(drained)
    }

    /// The deployment's lifecycle events as the built-in actions need
    /// them. The service runs BlockTraffic itself; whether the
    /// specification's `AllPossibleLifecycleEvents` names it is unconfirmed
    /// (docs/loadbalancer.md 2.6), but the Before/AfterBlockTraffic commands only exist
    /// when the deployment group has a load balancer: seeing one (now, or
    /// recorded in the deployment directory) means service traffic control.
    fn lifecycle(&self, spec: &DeploymentSpec, dir: &Path, command: &str) -> Vec<String> {
        let mut events = spec.all_possible_events.clone().unwrap_or_default();
        let seen = matches!(command, "BeforeBlockTraffic" | "AfterBlockTraffic")
            || layout::traffic_control_seen(dir).exists();
        if seen && !hooks_builtin::has_service_traffic_control(&events) {
            events.push("BlockTraffic".into());
        }
        events
    }

    fn drain_from(
        &self,
        t: &dyn Traffic,
        event: &str,
        events: &[String],
        spec: &DeploymentSpec,
        archive: &Path,
    ) -> Result<Option<String>, Diagnostics> {
        let Ok((appspec, _)) = hooks::load_appspec(archive, &spec.appspec_filename) else {
            return Ok(None);
        };
        let placement = hooks_builtin::placement(event, appspec.load_balancer.as_ref(), events)
            .map_err(|r| {
                Diagnostics::error(
                    crate::diagnostics::ErrorCode::ScriptFailed,
                    hooks_builtin::Action::Drain.script_name(),
                    r.0,
                )
            })?;
        if let Some(n) = &placement.notice {
            tracing::warn!(deployment = %spec.deployment_id, notice = %n, "loadBalancer");
        }
        match (placement.before_scripts, appspec.load_balancer.as_ref()) {
            (Some(hooks_builtin::Action::Drain), Some(lb)) => {
                let s = t.drain(spec, lb)?;
                t.stopping(spec);
                Ok(Some(s))
            }
            _ => Ok(None),
        }
    }

    fn scripts(
        &self,
        event: &str,
        spec: &DeploymentSpec,
        dir: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Report, Diagnostics> {
        let ctx = self.context(spec, dir);
        match hooks::run_event(event, &ctx, progress)? {
            EventOutcome::NoScripts(why) => Ok(Report {
                skipped: true,
                summary: why,
                completion: None,
            }),
            EventOutcome::Ran {
                scripts,
                output_left_open,
                from,
            } => {
                let mut s = format!("{scripts} script{}", if scripts == 1 { "" } else { "s" });
                if from != dir {
                    s.push_str(&format!(" from {}", from.display()));
                }
                if output_left_open > 0 {
                    s.push_str(&format!(", {output_left_open} left output open"));
                }
                Ok(Report::done(s))
            }
        }
    }

    /// Fetch and unpack the revision beside the deployment archive (kept if
    /// an earlier attempt of this command already did).
    fn prefetch(&self, spec: &DeploymentSpec, dir: &Path) -> Result<PathBuf, Diagnostics> {
        let target = layout::prefetched_dir(dir);
        if !target.is_dir() {
            let (stats, fetched) = self.fetch_and_unpack(spec, dir, &target)?;
            tracing::info!(deployment = %spec.deployment_id, files = stats.files, bytes = stats.bytes, fetched = %fetched, "revision fetched early for its loadBalancer section");
        }
        Ok(target)
    }

    fn download_bundle(&self, spec: &DeploymentSpec, dir: &Path) -> Result<Report, Diagnostics> {
        let t0 = Instant::now();
        let group = &spec.deployment_group_id;
        let last = layout::read_pointer(&self.layout.last_successful_pointer(group))
            .ok()
            .flatten();
        let pruned = layout::prune(
            &self.layout.group_dir(group),
            dir,
            last.as_deref(),
            self.config.max_revisions,
        )
        .map_err(|e| Diagnostics::unknown(format!("cannot remove old revisions: {e}")))?;
        let archive = layout::archive_dir(dir);
        let early = layout::prefetched_dir(dir);
        let mut summary = if early.is_dir() {
            // Fetched and unpacked by the deployment's first command.
            crate::fsutil::remove_tree(&archive)
                .and_then(|_| fs::rename(&early, &archive))
                .map_err(|e| {
                    Diagnostics::unknown(format!(
                        "cannot move the prefetched revision into place: {e}"
                    ))
                })?;
            "revision fetched and unpacked by the deployment's first command".to_string()
        } else {
            let (stats, fetched) = self.fetch_and_unpack(spec, dir, &archive)?;
            tracing::info!(deployment = %spec.deployment_id, files = stats.files, dirs = stats.dirs, bytes = stats.bytes, elapsed_ms = t0.elapsed().as_millis() as u64, "bundle unpacked");
            let mut s = format!(
                "{}, {}{} ({}) from a {} bundle",
                count(stats.files, "file"),
                count(stats.dirs, "directory"),
                if stats.symlinks > 0 {
                    format!(", {}", count(stats.symlinks, "symlink"))
                } else {
                    String::new()
                },
                human_bytes(stats.bytes),
                spec.revision.bundle_type().as_str()
            );
            if !fetched.is_empty() {
                s.push_str(&format!("; {fetched}"));
            }
            s
        };
        layout::write_pointer(&self.layout.most_recent_pointer(group), dir).map_err(|e| {
            Diagnostics::unknown(format!("cannot record the most recent deployment: {e}"))
        })?;
        if !pruned.is_empty() {
            summary.push_str(&format!("; removed {} old revision(s)", pruned.len()));
        }
        let source = fs::read_to_string(layout::bundle_source_file(dir))
            .unwrap_or_else(|_| BUNDLE_DOWNLOADED.to_string());
        Ok(Report {
            completion: Some(format!("Succeeded: BundleSource={}", source.trim())),
            ..Report::done(summary)
        })
    }

    /// Bring the revision to a file (or find it) and unpack it as `target`.
    fn fetch_and_unpack(
        &self,
        spec: &DeploymentSpec,
        dir: &Path,
        target: &Path,
    ) -> Result<(revision::Stats, String), Diagnostics> {
        let mut fetched = String::new();
        let source: PathBuf = match &spec.revision {
            RevisionSource::LocalFile { location, .. } => {
                let link = layout::bundle_file(dir);
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(location, &link).map_err(|e| {
                    Diagnostics::unknown(format!(
                        "cannot link {} to {}: {e}",
                        link.display(),
                        location.display()
                    ))
                })?;
                // Read through the user's own path, so errors name the file
                // they gave, not the link to it.
                location.clone()
            }
            RevisionSource::LocalDirectory { location } => location.clone(),
            remote @ (RevisionSource::S3 { .. } | RevisionSource::GitHub { .. }) => {
                let bundle = layout::bundle_file(dir);
                let _ = fs::remove_file(&bundle);
                match self.reuse_bundle(spec, &bundle) {
                    Some(from) => fetched = format!("reused the bundle of {from}"),
                    None => {
                        let fetcher = self.fetcher.ok_or_else(|| {
                            Diagnostics::unknown(
                                "this command cannot download S3 or GitHub revisions",
                            )
                        })?;
                        fetched = fetcher.fetch(remote, &bundle).map_err(|e| {
                            let _ = fs::remove_file(&bundle);
                            Diagnostics::unknown(e)
                        })?;
                    }
                }
                bundle
            }
        };
        let reused = if fetched.starts_with("reused") {
            BUNDLE_REUSED
        } else {
            BUNDLE_DOWNLOADED
        };
        let _ = fs::write(layout::bundle_source_file(dir), reused);
        let staging = layout::staging_dir(dir);
        let _ = crate::fsutil::remove_tree(&staging);
        let names = appspec_names(&spec.appspec_filename);
        let unpacked = revision::unpack(
            spec.revision.bundle_type(),
            &source,
            &staging,
            !self.config.ignore_ownership_in_bundle,
            self.config.revision_limits,
        )
        .and_then(|stats| revision::install_archive(&staging, target, &names).map(|_| stats));
        match unpacked {
            Ok(s) => Ok((s, fetched)),
            Err(e) => {
                let _ = crate::fsutil::remove_tree(&staging);
                Err(Diagnostics::unknown(format!("{e}")))
            }
        }
    }

    /// RESTART deployments name an earlier deployment whose bundle may be
    /// reused. Only a bundle that is on disk and intact is: a regular file
    /// (never a link), and, when the revision's ETag is an MD5, with those
    /// bytes. Anything else means downloading, never failing.
    fn reuse_bundle(&self, spec: &DeploymentSpec, dest: &Path) -> Option<String> {
        let from = spec.reuse_archive_from.as_deref()?;
        let valid = from.len() <= 64
            && from.strip_prefix("d-").is_some_and(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            });
        if !valid || from == spec.deployment_id {
            tracing::warn!(
                from,
                "not reusing an archive: not a deployment id of another deployment"
            );
            return None;
        }
        let src = layout::bundle_file(&self.layout.deployment_dir(&spec.deployment_group_id, from));
        let meta = fs::symlink_metadata(&src).ok()?;
        if !meta.file_type().is_file() {
            tracing::info!(from, "no reusable bundle on disk; downloading");
            return None;
        }
        if let RevisionSource::S3 { etag: Some(e), .. } = &spec.revision {
            let e = revision::fetch::normalize_etag(e);
            if e.len() == 32 && revision::fetch::md5_file(&src).ok().as_deref() != Some(e.as_str())
            {
                tracing::warn!(
                    from,
                    "the earlier bundle does not match the revision's ETag; downloading"
                );
                return None;
            }
        }
        // A hard link keeps the bytes when retention removes the source.
        if fs::hard_link(&src, dest).is_err() && fs::copy(&src, dest).is_err() {
            let _ = fs::remove_file(dest);
            return None;
        }
        Some(from.to_string())
    }

    fn install(&self, spec: &DeploymentSpec, dir: &Path) -> Result<Report, Diagnostics> {
        let archive = layout::archive_dir(dir);
        if !archive.is_dir() {
            return Err(Diagnostics::unknown(format!(
                "the revision is not downloaded ({} is missing); DownloadBundle must run first",
                archive.display()
            )));
        }
        let (appspec, file) = hooks::load_appspec_warning(&archive, &spec.appspec_filename)?;
        if let Some(all) = &spec.all_possible_events {
            events::check_hooks_against_deployment(appspec.hook_events(), all, &file)
                .map_err(Diagnostics::unknown)?;
        }
        let behavior =
            FileExistsBehavior::effective(appspec.file_exists_behavior, spec.file_exists_behavior);
        let req = install::Request {
            layout: &self.layout,
            group: &spec.deployment_group_id,
            archive_dir: &archive,
            spec: &appspec,
            appspec_file: &file,
            behavior,
            cwd: self.cwd.clone(),
        };
        let out = install::install(&req).map_err(|e| Diagnostics::unknown(e.to_string()))?;
        layout::write_pointer(
            &self
                .layout
                .last_successful_pointer(&spec.deployment_group_id),
            dir,
        )
        .map_err(|e| {
            Diagnostics::unknown(format!("cannot record the last successful deployment: {e}"))
        })?;
        let c = out.counts;
        let mut s = format!(
            "{}, {} created",
            count(c.files as u64, "file"),
            count(c.dirs_created as u64, "directory")
        );
        if c.replaced > 0 {
            s.push_str(&format!(", {} overwritten", c.replaced));
        }
        if c.kept > 0 {
            s.push_str(&format!(", {} kept (RETAIN)", c.kept));
        }
        if out.applied.permissions > 0 {
            s.push_str(&format!(", permissions on {}", out.applied.permissions));
        }
        if out.applied.contexts_skipped > 0 {
            s.push_str(&format!(
                ", SELinux contexts skipped on {} (SELinux is not enabled)",
                out.applied.contexts_skipped
            ));
        }
        if out.previous_removed > 0 {
            s.push_str(&format!(
                "; removed {} of the previous revision",
                count(out.previous_removed as u64, "path")
            ));
        }
        if !out.previous_kept_dirs.is_empty() {
            s.push_str(&format!(
                ", kept {} directories holding other files",
                out.previous_kept_dirs.len()
            ));
        }
        tracing::info!(
            deployment = %spec.deployment_id,
            files = c.files,
            dirs = c.dirs_created,
            cleanup_ms = out.cleanup_time.as_millis() as u64,
            install_ms = out.copy_time.as_millis() as u64,
            behavior = behavior.as_str(),
            "install complete"
        );
        Ok(Report::done(s))
    }
}

fn count(n: impl Into<u64>, what: &str) -> String {
    let n = n.into();
    match (n, what) {
        (1, _) => format!("1 {what}"),
        (_, "directory") => format!("{n} directories"),
        _ => format!("{n} {what}s"),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 10_000_000 => format!("{} MB", b / 1_000_000),
        b if b >= 10_000 => format!("{} kB", b / 1_000),
        b => format!("{b} bytes"),
    }
}

/// The appspec names to look for in a revision, in the order they are tried.
pub fn appspec_names(requested: &str) -> Vec<String> {
    appspec::candidates(requested)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Is a bundle type a single file (as opposed to a directory)?
pub fn is_file_type(t: BundleType) -> bool {
    t != BundleType::Directory
}
