//! The daemon: poll the commands API, acknowledge, run each command with
//! the executor, report. One command never runs twice; a command that was
//! running when the agent died is reported failed at the next start; on
//! SIGTERM polling stops and running commands finish (bounded) and report.

mod backoff;
pub mod notify;
pub mod remote;
pub mod service;
pub mod status;
pub mod tracker;
mod traffic;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::diagnostics::{Diagnostics, ErrorCode};
use crate::envelope::{EnvelopeError, Mode, Opened, Verifier, AWS_SIGNER_CHAIN};
use crate::executor::Executor;
use crate::net::control::{
    AckStatus, CommandsClient, ControlError, HostCommand, Stack, MAX_PAYLOAD,
};
use crate::net::http::HttpClient;
use crate::net::{endpoint, identity};
use crate::spec::DeploymentSpec;
use backoff::Backoff;
use remote::RemoteFetcher;
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
}

#[derive(Default)]
struct Finished {
    order: VecDeque<String>,
    result: HashMap<String, (bool, String)>,
}

impl Finished {
    const KEEP: usize = 256;

    fn insert(&mut self, id: String, outcome: (bool, String)) {
        if self.result.insert(id.clone(), outcome).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.result.remove(&old);
            }
        }
    }
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

    let sdk_http = remote::sdk_http_client(config.proxy_uri.as_deref())?;
    let direct_http = remote::sdk_http_client(None)?;
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
    let verifier = Verifier::new(&chain, &ident.region, mode, config.allow_unsigned_specs)
        .map_err(|e| e.to_string())?;
    let traffic = ident.instance.clone().map(|(instance_id, address)| {
        traffic::LbTraffic::new(
            &config,
            &ident.region,
            ident.credentials.clone(),
            sdk_http.clone(),
            hooks_builtin::HostId {
                instance_id,
                address,
            },
            tokio::runtime::Handle::current(),
        )
    });
    let fetcher = RemoteFetcher::new(
        &config,
        &ident.region,
        ident.credentials.clone(),
        sdk_http,
        http,
        tokio::runtime::Handle::current(),
    );
    let tracker = Tracker::new(config.root_dir.join(&config.ongoing_deployment_tracking));
    let status = status::StatusFile::new(status::path(&config), AGENT_VERSION);
    tracing::info!(host = %ident.host_identifier, region = %ident.region, identity = ident.kind, endpoint = %ep, version = AGENT_VERSION, "agent started");
    let agent = Arc::new(Agent {
        config,
        client,
        verifier,
        host: ident.host_identifier,
        fetcher,
        traffic,
        tracker,
        running: Mutex::new(HashSet::new()),
        finished: Mutex::new(Finished::default()),
        shutdown: stop_rx.clone(),
        status,
        ready: AtomicBool::new(false),
        heartbeat: AtomicU64::new(status::now()),
        spec_checks: Mutex::new(VecDeque::new()),
    });
    let crashed = agent.recover().await;
    if agent.traffic.is_some() {
        let me = agent.clone();
        tokio::spawn(async move { me.watch_journals(crashed).await });
    }
    if let Some(every) = notify::watchdog_interval() {
        let me = agent.clone();
        tokio::spawn(async move { me.watchdog(every).await });
    }

    let mut tasks = JoinSet::new();
    agent.poll_loop(&mut tasks).await;

    notify::notify("STOPPING=1");
    let bound = agent.config.kill_agent_max_wait_time;
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
    tracing::info!("agent stopped");
    Ok(())
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

    /// Report commands a previous run of the agent left unfinished.
    /// Report commands a crash interrupted; returns their deployments.
    async fn recover(&self) -> Vec<String> {
        let mut crashed = Vec::new();
        for (deployment, command) in self.tracker.interrupted() {
            crashed.push(deployment.clone());
            tracing::warn!(deployment = %deployment, command = %command, "a command was interrupted by an agent restart; reporting it failed");
            let d = Diagnostics::error(
                ErrorCode::FailedAfterRestart,
                "",
                "Failed: Failing in-progress lifecycle event after an agent restart.",
            );
            if self.report(&command, false, &d).await {
                self.tracker.end(&deployment);
            }
        }
        crashed
    }

    async fn poll_loop(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        let mut backoff = Backoff::new(
            Duration::from_secs(1),
            self.config.wait_after_error.max(Duration::from_secs(1)),
            seed(),
        );
        while !self.stopping() {
            while tasks.try_join_next().is_some() {}
            let mut rx = self.shutdown.clone();
            self.beat();
            let polled = tokio::select! {
                r = self.client.poll(&self.host) => r,
                _ = rx.wait_for(|s| *s) => break,
            };
            self.beat();
            self.polled(polled.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            let wait = match polled {
                Ok(Some(cmd)) => {
                    backoff.reset();
                    if self.accept(&cmd) {
                        let me = self.clone();
                        tasks.spawn(async move { me.handle(cmd).await });
                        continue;
                    }
                    self.config.wait_between_runs
                }
                Ok(None) => {
                    backoff.reset();
                    self.config.wait_between_runs
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, attempt = backoff.attempts(), throttled = e.throttled(), "polling failed");
                    d
                }
            };
            if !self.pause(wait).await {
                break;
            }
        }
    }

    fn beat(&self) {
        self.heartbeat.store(status::now(), Ordering::Relaxed);
    }

    /// READY=1 goes to systemd once the service has answered a poll: an
    /// agent that cannot reach it is not ready, and says why in the log.
    fn polled(&self, result: Result<(), String>) {
        match &result {
            Ok(()) if !self.ready.swap(true, Ordering::Relaxed) => {
                tracing::info!("first poll answered; ready");
                notify::notify("READY=1");
            }
            Err(e) if !self.ready.load(Ordering::Relaxed) => {
                tracing::error!(error = %e, "cannot poll the commands service; not ready until a poll is answered");
            }
            _ => {}
        }
        self.status.polled(result);
    }

    /// Ping systemd's watchdog while the poll loop turns. A loop stuck
    /// longer than its longest honest wait (a pause plus a long poll)
    /// stops the pings, and systemd restarts the agent.
    async fn watchdog(self: Arc<Self>, every: Duration) {
        let c = &self.config;
        let bound = c.wait_between_runs.max(c.wait_after_error) + c.http_read_timeout;
        let bound = bound.as_secs() + 60;
        let mut stop = self.shutdown.clone();
        loop {
            let age = status::now().saturating_sub(self.heartbeat.load(Ordering::Relaxed));
            if age <= bound {
                notify::notify("WATCHDOG=1");
            } else {
                tracing::error!(
                    stalled_secs = age,
                    "the poll loop is stalled; no watchdog ping"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Take a polled command unless it is running or was already done.
    fn accept(self: &Arc<Self>, cmd: &HostCommand) -> bool {
        if !self.host.contains(&cmd.host_identifier) {
            tracing::error!(expected = %self.host, got = %cmd.host_identifier, "host identifier mismatch; ignoring the command");
            return false;
        }
        let id = &cmd.host_command_identifier;
        if self.running.lock().map(|r| r.contains(id)).unwrap_or(true) {
            tracing::debug!(command = %id, "command offered again while running");
            return false;
        }
        let done = self
            .finished
            .lock()
            .ok()
            .and_then(|f| f.result.get(id).cloned());
        if let Some((ok, payload)) = done {
            tracing::warn!(command = %id, "command offered again after it finished; reporting its result again, not running it");
            let me = self.clone();
            let id = id.clone();
            tokio::spawn(async move {
                me.send_complete(&id, ok, &payload).await;
            });
            return false;
        }
        if let Ok(mut r) = self.running.lock() {
            r.insert(id.clone());
        }
        true
    }

    async fn handle(self: Arc<Self>, cmd: HostCommand) {
        let id = cmd.host_command_identifier.clone();
        let t0 = Instant::now();
        let outcome = self.handle_inner(&cmd).await;
        if let Ok(mut r) = self.running.lock() {
            r.remove(&id);
        }
        if let Some(outcome) = outcome {
            if let Ok(mut f) = self.finished.lock() {
                f.insert(id, outcome);
            }
        }
        tracing::debug!(command = %cmd.command_name, elapsed_ms = t0.elapsed().as_millis() as u64, "command handled");
    }

    /// Returns what was reported, or `None` when nothing was (the command
    /// was not taken, or the service had already finished it); a command
    /// offered again is then handled afresh, and its acknowledgement decides.
    async fn handle_inner(self: &Arc<Self>, cmd: &HostCommand) -> Option<(bool, String)> {
        let id = &cmd.host_command_identifier;
        let name = &cmd.command_name;
        let envelope = match self
            .retry("GetDeploymentSpecification", || {
                self.client
                    .specification(&cmd.deployment_execution_id, &self.host)
            })
            .await
        {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(command = %name, host_command = %id, error = %e, "cannot get the deployment specification");
                return None;
            }
        };
        let opened = self.verifier.open(&envelope.format, &envelope.payload);
        self.note_strict_verdict(&cmd.deployment_execution_id, &opened);
        let opened = opened.map(|o| o.spec);
        let noop = match &opened {
            Ok(spec) if is_known_command(name) => {
                let (me, spec, n) = (self.clone(), spec.clone(), name.clone());
                tokio::task::spawn_blocking(move || me.executor().is_noop(&n, &spec))
                    .await
                    .unwrap_or(false)
            }
            _ => false,
        };
        let status = match self
            .retry("PutHostCommandAcknowledgement", || {
                self.client.acknowledge(id, noop)
            })
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(command = %name, host_command = %id, error = %e, "cannot acknowledge the command");
                return None;
            }
        };
        tracing::info!(command = %name, host_command = %id, status = %status, noop, "command acknowledged");
        match status {
            s if s.proceed() => {}
            AckStatus::Failed if noop => {
                let d =
                    Diagnostics::error(ErrorCode::Succeeded, "", "Succeeded: CompletedNoopCommand");
                let p = d.to_json();
                self.send_complete(id, true, &p).await;
                return Some((true, p));
            }
            // Finished or cancelled by the service: nothing to run and
            // nothing of ours to report, then or if it is offered again.
            _ => return None,
        }
        let spec = match opened {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(command = %name, host_command = %id, error = %e, "deployment specification refused; nothing runs");
                let d = Diagnostics::unknown(e.to_string());
                self.report(id, false, &d).await;
                return Some((false, d.to_json()));
            }
        };
        if !is_known_command(name) {
            // As both official agents: a command this agent has no handler
            // for (UpdateDeploymentAgent, a custom event name) fails.
            tracing::error!(command = %name, host_command = %id, "unsupported command type");
            let d = Diagnostics::unknown(format!("Unsupported command type: {name}."));
            self.report(id, false, &d).await;
            return Some((false, d.to_json()));
        }
        if let Err(e) = self.tracker.begin(&spec.deployment_id, id) {
            tracing::warn!(error = %e, "cannot record the running command");
        }
        self.status.begin(id, &spec.deployment_id, name);
        let t0 = Instant::now();
        let result = {
            let (me, spec, n) = (self.clone(), spec.clone(), name.clone());
            tokio::task::spawn_blocking(move || me.execute(&n, &spec))
                .await
                .unwrap_or_else(|e| Err(Diagnostics::unknown(format!("the command panicked: {e}"))))
        };
        let ms = t0.elapsed().as_millis() as u64;
        let (ok, d) = match result {
            Ok(report) => {
                tracing::info!(deployment = %spec.deployment_id, command = %name, elapsed_ms = ms, summary = %report.summary, "command succeeded");
                let message = report.completion.as_deref().unwrap_or("Succeeded");
                (true, Diagnostics::error(ErrorCode::Succeeded, "", message))
            }
            Err(d) => {
                tracing::error!(deployment = %spec.deployment_id, command = %name, elapsed_ms = ms, error_code = d.code as u8, script = %d.script_name, message = %d.message, "command failed");
                (false, d)
            }
        };
        let reported = self.report(id, ok, &d).await;
        self.status.end(id);
        if reported {
            self.tracker.end(&spec.deployment_id);
        }
        Some((ok, fit_payload(&d)))
    }

    /// Log, and show in `status`, what strict verification decides of a
    /// deployment's specification: once per deployment, unless it changes.
    fn note_strict_verdict(&self, execution: &str, opened: &Result<Opened, EnvelopeError>) {
        let (deployment, refusal) = match opened {
            Ok(o) => (o.spec.deployment_id.clone(), o.strict.clone()),
            Err(EnvelopeError::Strict(why)) => (execution.to_string(), Some(why.clone())),
            Err(_) => return,
        };
        let strict = self.config.strict_deployment_spec_verification;
        let check = status::SpecCheck {
            deployment,
            strict,
            refusal,
        };
        let Ok(mut seen) = self.spec_checks.lock() else {
            return;
        };
        if seen.contains(&check) {
            return;
        }
        if seen.len() >= 64 {
            seen.pop_front();
        }
        seen.push_back(check.clone());
        drop(seen);
        match &check.refusal {
            None => {
                tracing::info!(deployment = %check.deployment, strict, "the specification passes strict verification")
            }
            Some(why) if strict => {
                tracing::error!(deployment = %check.deployment, reason = %why, "strict verification refused the specification")
            }
            Some(why) => {
                tracing::warn!(deployment = %check.deployment, reason = %why, "strict verification (off) would refuse this specification; accepted as the official agents accept it")
            }
        }
        self.status.spec_checked(check);
    }

    fn executor(&self) -> Executor<'_> {
        let mut e = Executor::new(&self.config);
        e.fetcher = Some(&self.fetcher);
        e.traffic = self
            .traffic
            .as_ref()
            .map(|t| t as &dyn crate::executor::Traffic);
        e
    }

    /// Journals outside commands. A deployment whose command a crash
    /// interrupted was just reported failed and sends nothing more: its
    /// journal is finished now. Others (a graceful restart between two
    /// commands) wait for their next command, or for `abandonAfter`.
    async fn watch_journals(self: Arc<Self>, crashed: Vec<String>) {
        let Some(t) = self.traffic.as_ref() else {
            return;
        };
        let mut stop = self.shutdown.clone();
        let mut recovering = true;
        loop {
            let abandoned = t.drainer.abandoned();
            for group in t.drainer.store.pending() {
                let why = match t.drainer.journal_of(&group) {
                    Some(d) if recovering && crashed.contains(&d) => hooks_builtin::Why::Recovery,
                    _ if abandoned.contains(&group) => hooks_builtin::Why::Abandoned,
                    _ => continue,
                };
                // A command of the same group must not run meanwhile.
                let me = self.clone();
                let g = group.clone();
                let lock = tokio::task::spawn_blocking(move || {
                    crate::layout::Layout::new(&me.config.root_dir, &me.config.program_name)
                        .lock_group(&g)
                })
                .await;
                let Ok(Ok(_lock)) = lock else { continue };
                t.finish(&group, why).await;
            }
            recovering = false;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn execute(
        &self,
        name: &str,
        spec: &DeploymentSpec,
    ) -> Result<crate::executor::Report, Diagnostics> {
        let exec = self.executor();
        let _lock = exec
            .layout
            .lock_group(&spec.deployment_group_id)
            .map_err(|e| {
                Diagnostics::unknown(format!(
                    "cannot lock deployment group {}: {e}",
                    spec.deployment_group_id
                ))
            })?;
        exec.execute(name, spec, &mut |script| {
            tracing::info!(deployment = %spec.deployment_id, event = %name, script, "running script")
        })
    }

    async fn report(&self, id: &str, ok: bool, d: &Diagnostics) -> bool {
        self.send_complete(id, ok, &fit_payload(d)).await
    }

    /// Deliver a completion. Retried with backoff until it lands, a
    /// permanent error, or (when stopping) the stop bound.
    async fn send_complete(&self, id: &str, ok: bool, payload: &str) -> bool {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30), seed());
        let started = Instant::now();
        loop {
            match self.client.complete(id, ok, payload).await {
                Ok(()) => {
                    tracing::info!(host_command = %id, succeeded = ok, "command completion reported");
                    return true;
                }
                Err(e)
                    if e.retryable()
                        && started.elapsed() < self.config.kill_agent_max_wait_time =>
                {
                    let d = b.next_delay();
                    tracing::warn!(host_command = %id, error = %e, retry_in_ms = d.as_millis() as u64, "reporting the completion failed");
                    tokio::time::sleep(d).await;
                }
                Err(e) => {
                    tracing::error!(host_command = %id, error = %e, "cannot report the completion");
                    return false;
                }
            }
        }
    }

    /// A call retried a few times on retryable errors (the command is not
    /// yet ours, so giving up only means the service offers it again).
    async fn retry<T, F, Fut>(&self, what: &str, f: F) -> Result<T, ControlError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ControlError>>,
    {
        let mut b = Backoff::new(Duration::from_millis(300), Duration::from_secs(10), seed());
        loop {
            match f().await {
                Err(e) if e.retryable() && b.attempts() < 5 && !self.stopping() => {
                    let d = b.next_delay();
                    tracing::warn!(call = what, error = %e, retry_in_ms = d.as_millis() as u64, "retrying");
                    tokio::time::sleep(d).await;
                }
                r => return r,
            }
        }
    }
}

/// The commands the daemon runs: the two of the agent and the hook events
/// of the official agents' default hook mapping. Custom events run only in
/// `local`, where `-e` names them.
fn is_known_command(name: &str) -> bool {
    matches!(
        appspec::events::classify(name),
        appspec::events::EventKind::AgentCommand | appspec::events::EventKind::Hook
    )
}

/// The service takes at most 8192 characters of diagnostics: shorten the
/// message first, then the log, never the JSON structure.
fn fit_payload(d: &Diagnostics) -> String {
    let mut d = d.clone();
    let mut p = d.to_json();
    while p.len() > MAX_PAYLOAD {
        if d.message.len() > 512 {
            d.message = d
                .message
                .chars()
                .take(d.message.chars().count() / 2)
                .collect();
        } else if !d.log.is_empty() {
            let n = d.log.chars().count();
            d.log = d.log.chars().skip(n / 2).collect();
        } else {
            d.message.truncate(100);
        }
        p = d.to_json();
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_fits_the_service_limit() {
        let mut d = Diagnostics::unknown("x".repeat(20_000));
        d.log = "y\n".repeat(1000);
        let p = fit_payload(&d);
        assert!(p.len() <= MAX_PAYLOAD);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["error_code"], 5);
        assert!(v["log"].as_str().unwrap().ends_with("y\n"));
    }

    #[test]
    fn finished_is_bounded() {
        let mut f = Finished::default();
        for i in 0..300 {
            f.insert(format!("c{i}"), (true, String::new()));
        }
        assert_eq!(f.result.len(), Finished::KEEP);
        assert!(f.result.contains_key("c299") && !f.result.contains_key("c0"));
    }
}
