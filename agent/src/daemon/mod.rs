//! The daemon: poll the commands API (`poller`), and for each command get
//! its specification, acknowledge, run it with the executor and report
//! (`processor`); finish drain journals outside commands (`journals`). One
//! command never runs twice; a command that was running when the agent died
//! is reported failed at the next start; on SIGTERM polling stops and
//! running commands finish (bounded) and report. This file starts it all.

mod backoff;
mod exposition;
mod journals;
pub mod notify;
mod poller;
mod processor;
pub mod service;
pub mod status;
pub mod tracker;
pub(crate) mod traffic;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::aws::{self, identity};
use crate::command::Executor;
use crate::config::Config;
use crate::envelope::{Mode, Verifier, AWS_SIGNER_CHAIN};
use crate::net::control::{CommandsClient, Stack};
use crate::net::endpoint;
use crate::net::http::HttpClient;
use crate::revision::remote::RemoteFetcher;
use poller::Finished;
use tracker::Tracker;

pub const AGENT_VERSION: &str = concat!("codedeploy-agent-rs-", env!("CARGO_PKG_VERSION"));

struct Agent {
    config: Config,
    client: CommandsClient,
    verifier: Verifier,
    host: String,
    fetcher: RemoteFetcher,
    /// The `loadBalancer` actions; EC2 hosts only.
    traffic: Option<traffic::LbTraffic>,
    tracker: Tracker,
    /// Commands being handled now.
    running: Mutex<HashSet<String>>,
    /// Recently finished commands and what was reported, so a command the
    /// service offers again is answered again, never run again.
    finished: Mutex<Finished>,
    shutdown: watch::Receiver<bool>,
    /// For `codedeploy-agent status`.
    status: status::StatusFile,
    /// systemd hears READY=1 after the first poll that got an answer.
    ready: AtomicBool,
    /// Unix seconds of the poll loop's last turn, for the watchdog.
    heartbeat: AtomicU64,
    /// Strict verdicts already reported, so each deployment logs one.
    spec_checks: Mutex<VecDeque<status::SpecCheck>>,
    /// A metrics textfile failure was logged (once until one succeeds).
    metrics_warned: AtomicBool,
    /// Start-up or a command touched memory that idling gives back
    /// (`idle::trim`), at the next empty poll with nothing running.
    trim_due: AtomicBool,
}

/// Run the daemon until SIGTERM/SIGINT. Errors are start-up failures.
pub fn run(config: Config) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("agent")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(main_loop(config))
}

async fn main_loop(config: Config) -> Result<(), String> {
    config.check_root_dir()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_signal_handler(stop_tx)?;
    let agent = Arc::new(Agent::start(config, stop_rx).await?);
    let crashed = agent.recover().await;
    if agent.traffic.is_some() {
        let me = agent.clone();
        tokio::spawn(async move { me.watch_journals(crashed).await });
    }
    if let Some(every) = notify::watchdog_interval() {
        let me = agent.clone();
        tokio::spawn(async move { me.watchdog(every).await });
    }
    if let Some(addr) = agent.config.metrics_listen {
        tokio::spawn(agent.clone().serve_metrics(addr));
    }
    let mut tasks = JoinSet::new();
    agent.poll_loop(&mut tasks).await;
    notify::notify("STOPPING=1");
    finish_running(tasks, agent.config.kill_agent_max_wait_time).await;
    tracing::info!("agent stopped");
    Ok(())
}

/// Let running commands finish and report, for at most `bound`.
async fn finish_running(mut tasks: JoinSet<()>, bound: Duration) {
    let n = tasks.len();
    if n > 0 {
        tracing::info!(
            running = n,
            bound_secs = bound.as_secs(),
            "stopping: waiting for running commands to finish"
        );
    }
    let drained =
        tokio::time::timeout(bound, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::error!(
            bound_secs = bound.as_secs(),
            "stopping with commands still running; the next start reports them failed"
        );
    }
}

/// The specification verifier `:deployment_spec_ca_file:` and
/// `:strict_deployment_spec_verification:` ask for.
fn verifier(config: &Config, region: &str) -> Result<Verifier, String> {
    let chain = match &config.deployment_spec_ca_file {
        Some(p) => std::fs::read(p)
            .map_err(|e| format!("cannot read :deployment_spec_ca_file: {}: {e}", p.display()))?,
        None => AWS_SIGNER_CHAIN.as_bytes().to_vec(),
    };
    let mode = if config.strict_deployment_spec_verification {
        Mode::Strict
    } else {
        Mode::Compatible
    };
    Verifier::new(&chain, region, mode, config.allow_unsigned_specs).map_err(|e| e.to_string())
}

impl Agent {
    /// Find the host's identity and build every client from it.
    async fn start(config: Config, shutdown: watch::Receiver<bool>) -> Result<Agent, String> {
        let sdk_http = aws::sdk_http_client(config.proxy_uri.as_deref())?;
        let direct_http = aws::sdk_http_client(None)?;
        let ident = identity::resolve(&config, sdk_http.clone(), direct_http)
            .await
            .map_err(|e| format!("cannot establish the host's identity: {e}"))?;
        let ep = endpoint::commands_endpoint(
            &ident.region,
            config.enable_auth_policy,
            config.use_fips_mode,
            config.deploy_control_endpoint.as_deref(),
        );
        // Long polls are answered within the read timeout.
        let http = HttpClient::new(config.proxy_uri.as_deref(), config.http_read_timeout)
            .map_err(|e| e.to_string())?;
        let client = CommandsClient::new(
            http.clone(),
            Stack::for_auth_policy(config.enable_auth_policy),
            &ep,
            &ident.region,
            ident.credentials.clone(),
            AGENT_VERSION,
        )?;
        let aws = aws::Context::new(&config, &ident.region, ident.credentials.clone(), sdk_http);
        let handle = tokio::runtime::Handle::current();
        let traffic = ident.instance.clone().map(|(instance_id, address)| {
            let host = hooks_builtin::HostId {
                instance_id,
                address,
            };
            traffic::LbTraffic::new(&config, &aws, host, handle.clone())
        });
        let layout = crate::layout::Layout::new(&config.root_dir, &config.program_name);
        tracing::info!(host = %ident.host_identifier, region = %ident.region, identity = ident.kind, endpoint = %ep, version = AGENT_VERSION, "agent started");
        Ok(Agent {
            verifier: verifier(&config, &ident.region)?,
            client,
            host: ident.host_identifier,
            fetcher: RemoteFetcher::new(&config, &aws, http, handle),
            traffic,
            tracker: Tracker::new(layout.tracker_dir(&config.ongoing_deployment_tracking)),
            running: Mutex::new(HashSet::new()),
            finished: Mutex::new(Finished::default()),
            shutdown,
            status: status::StatusFile::new(status::path(&config), AGENT_VERSION),
            ready: AtomicBool::new(false),
            heartbeat: AtomicU64::new(status::now()),
            spec_checks: Mutex::new(VecDeque::new()),
            metrics_warned: AtomicBool::new(false),
            trim_due: AtomicBool::new(true),
            config,
        })
    }
}

fn spawn_signal_handler(tx: watch::Sender<bool>) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "TERM", "stop requested"),
            _ = int.recv() => tracing::info!(signal = "INT", "stop requested"),
        }
        let _ = tx.send(true);
    });
    Ok(())
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

impl Agent {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Wait `d`, or less if a stop is requested. Returns false on stop.
    async fn pause(&self, d: Duration) -> bool {
        let mut rx = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping(),
            _ = rx.wait_for(|s| *s) => false,
        }
    }

    fn executor(&self) -> Executor<'_> {
        let mut e = Executor::new(&self.config);
        e.fetcher = Some(&self.fetcher);
        e.traffic = self
            .traffic
            .as_ref()
            .map(|t| t as &dyn crate::command::Traffic);
        e
    }
}
