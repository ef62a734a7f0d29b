//! One host command of one deployment against the deployment root, behind
//! a short dispatcher: DownloadBundle (`download.rs`), Install
//! (`install.rs`) or a lifecycle event's scripts (`event.rs`), with the
//! `loadBalancer` steps before and after (`load_balancer.rs`). The daemon
//! and `local` share it.

mod download;
mod event;
mod install;
mod load_balancer;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use appspec::events::{HostCommand, LifecycleEvent};
use hooks_builtin::journal::Phase;
use hooks_builtin::lifecycle::Step;

use crate::appspec_file::Cache;
use crate::config::Config;
use crate::diagnostics::Diagnostics;
use crate::hooks;
use crate::layout::{self, Layout};
use crate::revision::progress::Progress;
use crate::spec::{DeploymentSpec, RevisionSource};

/// Runs host commands for one agent configuration.
pub struct Executor<'a> {
    /// The agent's configuration.
    pub config: &'a Config,
    /// Where deployments live on disk.
    pub layout: Layout,
    /// Where relative appspec destinations resolve (the agent's cwd).
    pub cwd: PathBuf,
    /// Downloads remote (S3, GitHub) bundles; `None` refuses them.
    pub fetcher: Option<&'a dyn Fetcher>,
    /// Takes the host out of its load balancers and puts it back (the
    /// daemon on EC2); `None`: a `loadBalancer` section is not acted on.
    pub traffic: Option<&'a dyn Traffic>,
}

/// The native `loadBalancer` steps on this host, blocking like `Fetcher`.
/// When each runs is decided by `hooks_builtin::lifecycle`.
pub trait Traffic: Sync {
    /// The phase of the group's drain journal, when it belongs to this
    /// deployment.
    fn journal(&self, spec: &DeploymentSpec) -> Option<Phase>;
    /// Carry out one step for `d`'s command; a summary for the report when
    /// it did something.
    fn step(&self, d: &Deployment, step: Step<'_>) -> Result<Option<String>, Diagnostics>;
}

/// Brings a remote bundle to a file. Blocking: the executor runs on a
/// worker thread; the daemon's implementation drives its async clients.
pub trait Fetcher: Sync {
    /// Write the bundle to `dest`; returns a summary for the log. With
    /// `progress` (only when `streams` says so), tell it of the bytes as
    /// they land, and stop when it is cancelled; the caller reports how
    /// the download ended.
    fn fetch(
        &self,
        revision: &RevisionSource,
        dest: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<String, String>;

    /// Whether `fetch` of `revision` reports its progress, so the bundle
    /// can be unpacked while it downloads.
    fn streams(&self, _revision: &RevisionSource) -> bool {
        false
    }
}

/// What a successful command did, for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Nothing to do (no scripts, no previous revision ...).
    pub skipped: bool,
    /// One line for the log and `local`'s output.
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

/// One deployment as one host command sees it: the specification, its
/// directory, and the appspecs the command has read (each once).
#[derive(Debug)]
pub struct Deployment {
    /// The deployment specification.
    pub spec: DeploymentSpec,
    /// `<root_dir>/<group>/<deployment>`.
    pub dir: PathBuf,
    /// The appspecs read for this command, by revision directory.
    pub appspecs: Cache,
    /// When the command arrived: the service gives it an hour from about
    /// then (`appspec::load_balancer::COMMAND_BUDGET_SECONDS`).
    pub started: Instant,
}

impl Deployment {
    /// When the command's hour ends, less a margin to report it.
    pub fn deadline(&self) -> Instant {
        let hour = u64::from(appspec::load_balancer::COMMAND_BUDGET_SECONDS);
        self.started + Duration::from_secs(hour.saturating_sub(REPORT_MARGIN_SECONDS))
    }
}

/// Kept from a command's hour to report its completion.
const REPORT_MARGIN_SECONDS: u64 = 30;

impl<'a> Executor<'a> {
    /// An executor with no fetcher and no traffic control.
    pub fn new(config: &'a Config) -> Executor<'a> {
        Executor {
            config,
            layout: Layout::new(&config.root_dir, &config.program_name),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            fetcher: None,
            traffic: None,
        }
    }

    /// The deployment `spec` describes, for one host command.
    pub fn deployment(&self, spec: DeploymentSpec) -> Deployment {
        let dir = self.deployment_dir(&spec);
        Deployment {
            spec,
            dir,
            appspecs: Cache::default(),
            started: Instant::now(),
        }
    }

    /// `<root_dir>/<group>/<deployment>` of `spec`.
    pub fn deployment_dir(&self, spec: &DeploymentSpec) -> PathBuf {
        self.layout
            .deployment_dir(&spec.deployment_group_id, &spec.deployment_id)
    }

    fn context<'b>(&'b self, d: &'b Deployment) -> hooks::Context<'b> {
        hooks::Context {
            config: self.config,
            appspecs: &d.appspecs,
            layout: &self.layout,
            spec: &d.spec,
            deployment_dir: &d.dir,
        }
    }

    /// For the acknowledgement: does this command do nothing here?
    pub fn is_noop(&self, command: &HostCommand, d: &Deployment) -> bool {
        let HostCommand::Event(event) = command else {
            return false;
        };
        if let Some(t) = self.traffic {
            if load_balancer::must_run(t, command, d) {
                return false;
            }
        }
        hooks::planned(event.as_str(), &self.context(d)) == Some(0)
    }

    /// Run `command`, the `loadBalancer` steps around it included.
    pub fn execute(
        &self,
        command: &HostCommand,
        d: &Deployment,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Report, Diagnostics> {
        self.prepare(command, d)?;
        let result = load_balancer::before(self, command, d).and_then(|drained| {
            let r = match command {
                HostCommand::DownloadBundle => download::run(self, d),
                HostCommand::Install => install::run(self, d),
                HostCommand::Event(event) => event::run(self, d, event, progress),
            };
            r.map(|mut report| {
                if let Some(s) = drained {
                    report.summary = format!("loadBalancer: {s}; {}", report.summary);
                    report.skipped = false;
                }
                report
            })
        });
        load_balancer::after(self, command, d, result)
    }

    /// Refuse a group the layout cannot hold, clear what an interrupted
    /// run left, and make the deployment's directory.
    fn prepare(&self, command: &HostCommand, d: &Deployment) -> Result<(), Diagnostics> {
        let group = &d.spec.deployment_group_id;
        if let Some(why) = layout::group_refusal(group, &self.config.ongoing_deployment_tracking) {
            return Err(Diagnostics::unknown(why));
        }
        match self.layout.sweep_leftovers(group) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(group = %group, removed = n, "removed what an interrupted run left")
            }
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "cannot remove what an interrupted run left")
            }
        }
        fs::create_dir_all(&d.dir).map_err(|e| {
            Diagnostics::unknown(format!(
                "Error creating deployment root directory {}: {e}",
                d.dir.display()
            ))
        })?;
        if command.is(&LifecycleEvent::BeforeBlockTraffic) {
            let _ = fs::write(layout::traffic_control_seen(&d.dir), "");
        }
        Ok(())
    }
}
