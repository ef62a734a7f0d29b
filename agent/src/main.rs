//! `codedeploy-agent`: the command-line shell over the agent library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

use codedeploy_agent::config::{Config, LogFormat, DEFAULT_CONFIG_PATH};
use codedeploy_agent::layout::{self, AgentLog};
use codedeploy_agent::{daemon, local, validate};

#[derive(Parser)]
#[command(
    name = "codedeploy-agent",
    version,
    about = "AWS CodeDeploy host agent"
)]
struct Cli {
    /// The agent configuration file (default: /etc/codedeploy-agent/conf/codedeployagent.yml).
    #[arg(
        long = "config_file",
        alias = "config-file",
        global = true,
        value_name = "PATH"
    )]
    config_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground (what the systemd unit runs).
    Run,
    /// Start the agent in the background (pid file under :pid_dir:).
    Start,
    /// Stop the background agent, letting a running command finish.
    Stop,
    /// Stop, then start.
    Restart,
    /// Say whether the agent is running, when it last polled, whether a
    /// deployment is pending for this host and what it is doing.
    Status {
        /// One JSON object instead of lines (exit status as without).
        #[arg(long)]
        json: bool,
    },
    /// Deploy a revision on this host without the CodeDeploy service (codedeploy-local).
    Local(LocalArgs),
    /// Check an appspec, a bundle directory or a bundle archive, offline.
    Validate {
        /// appspec.yml, a bundle directory, or a .zip/.tar/.tgz bundle.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The appspec file name inside a bundle.
        #[arg(short = 'A', long = "appspec-filename", default_value = "appspec.yml")]
        appspec_filename: String,
    },
    /// The `loadBalancer` section on this host.
    #[command(subcommand)]
    Lb(LbCommand),
    #[command(name = "__drain", hide = true)]
    Drain,
    #[command(name = "__drain-detached", hide = true)]
    DrainDetached,
}

#[derive(Subcommand)]
enum LbCommand {
    /// What a deployment's drain and restore would change here, read-only,
    /// with this host's credentials; exits 1 when the drain would fail.
    Plan {
        /// appspec.yml, or a bundle directory holding it.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
}

#[derive(clap::Args)]
struct LocalArgs {
    /// The bundle: a directory or a tgz/tar/zip file (default: the current directory).
    #[arg(short = 'l', long = "bundle-location", default_value = ".")]
    bundle_location: String,
    /// tgz, tar, zip or directory.
    #[arg(short = 't', long = "type", default_value = "directory")]
    bundle_type: String,
    /// DISALLOW, OVERWRITE or RETAIN, for files that exist but were not part of the previous deployment.
    #[arg(short = 'b', long = "file-exists-behavior", default_value = "DISALLOW")]
    file_exists_behavior: String,
    /// The deployment group id: the folder of the deployments under the deployment root.
    #[arg(
        short = 'g',
        long = "deployment-group",
        default_value = "default-local-deployment-group"
    )]
    deployment_group: String,
    /// The deployment group name, given to scripts as DEPLOYMENT_GROUP_NAME.
    #[arg(
        short = 'd',
        long = "deployment-group-name",
        default_value = "LocalFleet"
    )]
    deployment_group_name: String,
    /// The application name, given to scripts as APPLICATION_NAME (default: the bundle location).
    #[arg(short = 'a', long = "application-name")]
    application_name: Option<String>,
    /// Lifecycle events to run, in order, comma-separated.
    #[arg(short = 'e', long = "events", value_delimiter = ',')]
    events: Option<Vec<String>>,
    /// The agent configuration file.
    #[arg(short = 'c', long = "agent-configuration-file")]
    agent_configuration_file: Option<PathBuf>,
    /// The appspec file name inside the bundle (default: appspec.yml, else appspec.yaml);
    /// a name given here must be in the bundle.
    #[arg(short = 'A', long = "appspec-filename")]
    appspec_filename: Option<String>,
}

fn load_config(explicit: Option<&Path>) -> Result<Config, String> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    if explicit.is_none() && !path.exists() {
        eprintln!("note: {DEFAULT_CONFIG_PATH} does not exist; using the default configuration");
        return Ok(Config::default());
    }
    let (cfg, warnings) = Config::load(path).map_err(|e| e.to_string())?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(cfg)
}

/// Log to `<log_dir>/<file>` with fields, and warnings to stderr (except
/// what the `local` command already prints on its own lines).
fn init_logging(cfg: &Config, file: AgentLog, stderr_level: LevelFilter) {
    use std::io::IsTerminal;
    let level = if cfg.verbose {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .with_filter(stderr_level)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() != "codedeploy_agent::local"
        }));
    let path = layout::agent_log(&cfg.log_dir, &cfg.program_name, file);
    let file_layer = codedeploy_agent::logfile::LogFile::open(&path, cfg.log_rotation)
        .map_err(|e| eprintln!("warning: cannot write {}: {e}", path.display()))
        .ok()
        .map(|f| {
            let writer = Mutex::new(f);
            let layer: Box<dyn tracing_subscriber::Layer<_> + Send + Sync> = match cfg.log_format {
                // One object per line: timestamp, level, target, the
                // message and every field at the top level.
                LogFormat::Json => tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(writer)
                    .boxed(),
                LogFormat::Text => tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(writer)
                    .boxed(),
            };
            layer.with_filter(level)
        });
    // The AWS SDK's own warnings repeat, with full debug dumps, what the
    // agent already logs once with context: keep only its errors.
    let quiet_sdk = tracing_subscriber::filter::filter_fn(|m| {
        !m.target().starts_with("aws_") || *m.level() == tracing::Level::ERROR
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .with(quiet_sdk)
        .try_init();
}

fn main() -> ExitCode {
    // Installed as `codedeploy-local`, behave as `codedeploy-agent local`.
    let mut args: Vec<String> = std::env::args().collect();
    if args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "codedeploy-local")
    {
        args.insert(1, "local".into());
    }
    let cli = Cli::parse_from(args);
    let daemon_config = || -> Result<Config, ExitCode> {
        let path = cli.config_file.as_deref();
        load_config(path).map_err(|e| {
            eprintln!("ERROR: {e}");
            ExitCode::from(2)
        })
    };
    let config_path = cli
        .config_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    match cli.command {
        Command::Run => {
            let cfg = match daemon_config() {
                Ok(c) => c,
                Err(code) => return code,
            };
            let level = if cfg.verbose {
                LevelFilter::DEBUG
            } else {
                LevelFilter::INFO
            };
            init_logging(&cfg, AgentLog::Daemon, level);
            let _pid = match daemon::service::PidFile::claim(&cfg) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("ERROR: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match daemon::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "the agent cannot start");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Start | Command::Stop | Command::Restart | Command::Status { .. } => {
            let cfg = match daemon_config() {
                Ok(c) => c,
                Err(code) => return code,
            };
            let r = match cli.command {
                Command::Status { json } => {
                    return ExitCode::from(daemon::service::status(&cfg, json) as u8)
                }
                Command::Start => daemon::service::start(&cfg, &config_path),
                Command::Stop => daemon::service::stop(&cfg),
                _ => daemon::service::stop(&cfg)
                    .and_then(|_| daemon::service::start(&cfg, &config_path)),
            };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ERROR: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Lb(LbCommand::Plan { path }) => {
            let cfg = match daemon_config() {
                Ok(c) => c,
                Err(code) => return code,
            };
            // Only warnings reach the terminal; the plan is printed.
            init_logging(&cfg, AgentLog::LbPlan, LevelFilter::WARN);
            ExitCode::from(codedeploy_agent::lb_plan::run(&cfg, &path) as u8)
        }
        Command::Drain => exit_io(codedeploy_agent::hooks::runner::drain_main(false)),
        Command::DrainDetached => exit_io(codedeploy_agent::hooks::runner::drain_main(true)),
        Command::Validate {
            path,
            appspec_filename,
        } => run_validate(&path, &appspec_filename),
        Command::Local(a) => {
            let cfg = match load_config(
                a.agent_configuration_file
                    .as_deref()
                    .or(cli.config_file.as_deref()),
            ) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ERROR: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg, AgentLog::Local, LevelFilter::WARN);
            let opts = local::Options {
                bundle_location: a.bundle_location,
                bundle_type: a.bundle_type,
                file_exists_behavior: a.file_exists_behavior,
                deployment_group: a.deployment_group,
                deployment_group_name: a.deployment_group_name,
                application_name: a.application_name,
                events: a.events,
                appspec_filename: a.appspec_filename,
            };
            match local::run(&cfg, &opts) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e @ local::LocalError::Invalid(_)) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
                Err(local::LocalError::Failed) => ExitCode::FAILURE,
            }
        }
    }
}

fn exit_io(r: std::io::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn run_validate(path: &Path, appspec_filename: &str) -> ExitCode {
    match validate::validate(path, appspec_filename) {
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
        Ok(f) => {
            // Every line says its severity, after its place, as compilers do.
            for d in &f.diagnostics {
                eprintln!("{d}");
            }
            for p in &f.problems {
                let p = p.strip_prefix(&format!("{}: ", f.name)).unwrap_or(p);
                eprintln!("{}: error: {p}", f.name);
            }
            let (errors, warnings) = (f.errors(), f.warnings());
            let count =
                |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
            match &f.spec {
                Some(spec) if errors == 0 => {
                    println!("{}", validate::summary(&f.name, spec));
                    ExitCode::SUCCESS
                }
                _ => {
                    eprintln!(
                        "{}: error: {}, {}",
                        f.name,
                        count(errors.max(1), "error"),
                        count(warnings, "warning")
                    );
                    ExitCode::FAILURE
                }
            }
        }
    }
}
