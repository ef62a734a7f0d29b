//! `codedeployagent.yml`, read as the Ruby agent reads it: a YAML mapping
//! whose keys are Ruby symbols (`:root_dir:`). Unknown keys warn (a missing
//! leading colon is the classic reason a setting "does nothing"); bad values
//! fail at start with the file, line and key.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use appspec::yaml::{self, Node, Value};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/codedeploy-agent/conf/codedeployagent.yml";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeZone {
    Local,
    Utc,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the values came from; `None` when only defaults apply.
    pub source: Option<PathBuf>,
    pub program_name: String,
    pub root_dir: PathBuf,
    pub log_dir: PathBuf,
    pub pid_dir: PathBuf,
    pub verbose: bool,
    pub wait_between_runs: Duration,
    pub wait_after_error: Duration,
    pub http_read_timeout: Duration,
    pub max_revisions: u32,
    pub proxy_uri: Option<String>,
    pub disable_imds_v1: bool,
    pub enable_auth_policy: bool,
    pub use_fips_mode: bool,
    pub deploy_control_endpoint: Option<String>,
    pub s3_endpoint_override: Option<String>,
    pub on_premises_config_file: PathBuf,
    pub enable_deployments_log: bool,
    pub time_zone: TimeZone,
    pub kill_agent_max_wait_time: Duration,
    pub ongoing_deployment_tracking: String,
    pub log_aws_wire: bool,
    // Keys of our own (documented in README.md as extensions).
    /// Grace between TERM and KILL when a script times out.
    pub hook_kill_grace: Duration,
    /// How long to keep reading a script's output after the script exited,
    /// when something it started in the background still holds the pipe.
    pub hook_output_grace: Duration,
    /// Run `runas` scripts through the user's login shell so its profile is read.
    pub runas_login_shell: bool,
    /// Do not give unpacked files the owners recorded in a tar bundle (GNU
    /// tar, and so the official agent, restores them when run as root). A
    /// local user whose uid matches the bundle's could otherwise edit hook
    /// scripts before they run as root. Same key as the official Rust agent.
    pub ignore_ownership_in_bundle: bool,
    /// Where the instance metadata service answers (the testbed runs one per
    /// simulated instance).
    pub imds_endpoint: Option<String>,
    /// Trust this PEM chain for deployment specifications instead of the
    /// AWS chain the agent embeds (the testbed's CA).
    pub deployment_spec_ca_file: Option<PathBuf>,
    /// Accept unsigned `TEXT/JSON` specifications. Tests only.
    pub allow_unsigned_specs: bool,
    /// Refuse specifications whose signer does not chain to the trusted
    /// certificates or is not the region's signer (see envelope.rs).
    pub strict_deployment_spec_verification: bool,
    /// Bounds on what one bundle may unpack to.
    pub revision_limits: crate::revision::Limits,
    /// The GitHub API base URL (`https://api.github.com`).
    pub github_endpoint: String,
    /// Parallel ranged requests for large S3 objects.
    pub s3_download_parts: usize,
    /// Auto Scaling and Elastic Load Balancing endpoints (VPC endpoints,
    /// the testbed); the regional ones when absent.
    pub autoscaling_endpoint: Option<String>,
    pub elb_endpoint: Option<String>,
    /// How often the `loadBalancer` drain polls Describe calls while it
    /// waits (production: 5000).
    pub load_balancer_poll_ms: u64,
    /// Prometheus text written here after each poll and command (for
    /// node_exporter's textfile collector); off when absent.
    pub metrics_textfile: Option<PathBuf>,
    /// Serve `GET /metrics` here; loopback addresses only; off when absent.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The agent log's lines: text, or one JSON object each.
    pub log_format: LogFormat,
    /// Size bound of the agent log, the deployments log and each
    /// scripts.log, and how many rotated files each keeps.
    pub log_rotation: crate::logfile::Rotation,
}

/// `:log_format:`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines with `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line: time, level, message and every field.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: None,
            program_name: "codedeploy-agent".into(),
            root_dir: "/opt/codedeploy-agent/deployment-root".into(),
            log_dir: "/var/log/aws/codedeploy-agent".into(),
            pid_dir: "/opt/codedeploy-agent/state/.pid".into(),
            verbose: false,
            wait_between_runs: Duration::from_secs(30),
            wait_after_error: Duration::from_secs(30),
            http_read_timeout: Duration::from_secs(80),
            max_revisions: 5,
            proxy_uri: None,
            disable_imds_v1: false,
            enable_auth_policy: false,
            use_fips_mode: false,
            deploy_control_endpoint: None,
            s3_endpoint_override: None,
            on_premises_config_file: "/etc/codedeploy-agent/conf/codedeploy.onpremises.yml".into(),
            enable_deployments_log: true,
            time_zone: TimeZone::Local,
            kill_agent_max_wait_time: Duration::from_secs(7200),
            ongoing_deployment_tracking: "ongoing-deployment".into(),
            log_aws_wire: false,
            hook_kill_grace: Duration::from_secs(5),
            hook_output_grace: Duration::from_secs(2),
            runas_login_shell: false,
            ignore_ownership_in_bundle: false,
            imds_endpoint: None,
            deployment_spec_ca_file: None,
            allow_unsigned_specs: false,
            strict_deployment_spec_verification: false,
            revision_limits: crate::revision::Limits::default(),
            github_endpoint: "https://api.github.com".into(),
            s3_download_parts: 4,
            autoscaling_endpoint: None,
            elb_endpoint: None,
            load_balancer_poll_ms: 5000,
            metrics_textfile: None,
            metrics_listen: None,
            log_format: LogFormat::Text,
            log_rotation: crate::logfile::Rotation::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Keys the Ruby or Rust official agents accept that do not change anything
/// here; they are accepted silently so a shared config file stays quiet.
const ACCEPTED_LEGACY: &[&str] = &[
    "children",
    "user",
    "shared_dir",
    "wait_between_spawning_children",
    "instance_service_region",
    "instance_service_endpoint",
    "instance_service_port",
    "codedeploy_test_profile",
    "enable_command_port",
    "enable_archive_reuse",
    "disable_core_dumps",
    // The official Rust agent's opt-in hardening that this agent always
    // applies: traversal and escaping links are refused, permissions never
    // follow symlinks.
    "reject_path_traversal_in_bundle",
    "reject_symlink_permission_targets",
];

/// The official Rust agent's other opt-in hardening keys, which this agent
/// does not implement: accepted, with a warning when turned on.
const UNSUPPORTED_HARDENING: &[&str] = &[
    "reject_symlinks_in_bundle",
    "reject_unconfined_selinux_in_bundle",
    "reject_unsafe_permissions_in_bundle",
    "restrict_agent_dir_permissions",
    "restrict_log_dir_permissions",
    "strip_loader_env_in_hooks",
    "restrict_hook_env_to_allowlist",
    "disable_powershell_profile_in_hooks",
    "archive_max_extraction_size",
];

impl Config {
    /// Read `path`. Returns the config and warnings for the log.
    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let shown = path.display().to_string();
        let root = yaml::parse(text).map_err(|e| {
            ConfigError::Invalid(format!(
                "{shown}:{}:{}: not valid YAML: {}",
                e.pos.line, e.pos.column, e.message
            ))
        })?;
        let mut cfg = Config {
            source: Some(path.to_path_buf()),
            ..Config::default()
        };
        let mut warnings = Vec::new();
        let mut errors = String::new();
        let Some(root) = root else {
            return Ok((cfg, warnings));
        };
        let Some(pairs) = root.as_map() else {
            return Err(ConfigError::Invalid(format!(
                "{shown}: expected a mapping of :key: value lines"
            )));
        };
        for (k, v) in pairs {
            let Some(raw) = k.key_text() else { continue };
            let key = raw.strip_prefix(':').unwrap_or(raw);
            let at = format!("{shown}:{}:{}: :{key}:", k.pos.line, k.pos.column);
            if !raw.starts_with(':') && is_known(key) {
                warnings.push(format!(
                    "{shown}:{}: key {raw:?} has no leading colon; the official agent ignores it, this agent reads it as :{key}:",
                    k.pos.line
                ));
            }
            if let Err(e) = cfg.set(key, v) {
                let _ = writeln!(errors, "{at} {e}");
            } else if UNSUPPORTED_HARDENING.contains(&key) {
                if !matches!(
                    v.as_scalar().map(|s| &s.value),
                    Some(Value::Bool(false) | Value::Null)
                ) {
                    warnings.push(format!(
                        "{shown}:{}: {raw:?} is not supported by this agent and is ignored",
                        k.pos.line
                    ));
                }
            } else if !is_known(key) && !ACCEPTED_LEGACY.contains(&key) {
                warnings.push(format!(
                    "{shown}:{}: unknown key {raw:?} is ignored",
                    k.pos.line
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors.trim_end().to_string()));
        }
        Ok((cfg, warnings))
    }

    fn set(&mut self, key: &str, v: &Node) -> Result<(), String> {
        match key {
            "program_name" => self.program_name = string(v)?,
            "root_dir" => {
                let p: PathBuf = string(v)?.into();
                if p.is_relative() {
                    // Relative to what? The daemon's cwd is / under systemd
                    // and the shell's anywhere else: refused, not guessed.
                    return Err(format!(
                        "must be an absolute path, found {:?}",
                        p.display().to_string()
                    ));
                }
                self.root_dir = p;
            }
            "log_dir" => self.log_dir = string(v)?.into(),
            "pid_dir" => self.pid_dir = string(v)?.into(),
            "verbose" => self.verbose = boolean(v)?,
            "wait_between_runs" => self.wait_between_runs = secs(v, 0)?,
            "wait_after_error" => self.wait_after_error = secs(v, 0)?,
            "http_read_timeout" => self.http_read_timeout = secs(v, 1)?,
            "max_revisions" => {
                let n = integer(v)?;
                if !(1..=1000).contains(&n) {
                    return Err(format!(
                        "must be at least 1 (it counts the current revision), found {n}"
                    ));
                }
                self.max_revisions = n as u32;
            }
            "proxy_uri" => self.proxy_uri = opt_string(v)?,
            "disable_imds_v1" => self.disable_imds_v1 = boolean(v)?,
            "enable_auth_policy" => self.enable_auth_policy = boolean(v)?,
            "use_fips_mode" => self.use_fips_mode = boolean(v)?,
            "deploy_control_endpoint" => self.deploy_control_endpoint = opt_string(v)?,
            "s3_endpoint_override" => self.s3_endpoint_override = opt_string(v)?,
            "on_premises_config_file" => self.on_premises_config_file = string(v)?.into(),
            "enable_deployments_log" => self.enable_deployments_log = boolean(v)?,
            "time_zone" => {
                self.time_zone = match string(v)?.as_str() {
                    "local" => TimeZone::Local,
                    "utc" => TimeZone::Utc,
                    other => return Err(format!("must be local or utc, found {other:?}")),
                }
            }
            "kill_agent_max_wait_time_seconds" => self.kill_agent_max_wait_time = secs(v, 0)?,
            "ongoing_deployment_tracking" => self.ongoing_deployment_tracking = string(v)?,
            "log_aws_wire" => self.log_aws_wire = boolean(v)?,
            "hook_kill_grace_seconds" => self.hook_kill_grace = secs(v, 0)?,
            "hook_output_grace_seconds" => self.hook_output_grace = secs(v, 0)?,
            "runas_login_shell" => self.runas_login_shell = boolean(v)?,
            "ignore_ownership_in_bundle" => self.ignore_ownership_in_bundle = boolean(v)?,
            "imds_endpoint" => self.imds_endpoint = opt_string(v)?,
            "deployment_spec_ca_file" => {
                self.deployment_spec_ca_file = opt_string(v)?.map(PathBuf::from)
            }
            "allow_unsigned_specs" => self.allow_unsigned_specs = boolean(v)?,
            "revision_max_bytes" => {
                let n = integer(v)?;
                if n < 1 {
                    return Err(format!("must be a positive number of bytes, found {n}"));
                }
                self.revision_limits.max_bytes = n as u64;
            }
            "revision_max_entries" => {
                let n = integer(v)?;
                if n < 1 {
                    return Err(format!("must be a positive number of entries, found {n}"));
                }
                self.revision_limits.max_entries = n as u64;
            }
            "strict_deployment_spec_verification" => {
                self.strict_deployment_spec_verification = boolean(v)?
            }
            "github_endpoint" => self.github_endpoint = string(v)?,
            "s3_download_parts" => {
                let n = integer(v)?;
                if !(1..=32).contains(&n) {
                    return Err(format!("must be 1 to 32, found {n}"));
                }
                self.s3_download_parts = n as usize;
            }
            "autoscaling_endpoint" => self.autoscaling_endpoint = opt_string(v)?,
            "elb_endpoint" => self.elb_endpoint = opt_string(v)?,
            "metrics_textfile" => {
                self.metrics_textfile = opt_string(v)?.map(PathBuf::from);
                if let Some(p) = &self.metrics_textfile {
                    if p.is_relative() || p.extension().is_none_or(|e| e != "prom") {
                        return Err(format!(
                            "must be an absolute path ending in .prom (what the textfile collector reads), found {:?}",
                            p.display().to_string()
                        ));
                    }
                }
            }
            "metrics_listen" => {
                self.metrics_listen = match opt_string(v)? {
                    None => None,
                    Some(a) => {
                        let addr: std::net::SocketAddr = a
                            .parse()
                            .map_err(|_| format!("must be address:port, found {a:?}"))?;
                        if !addr.ip().is_loopback() {
                            return Err(format!(
                                "must be a loopback address (127.0.0.1:PORT or [::1]:PORT): metrics are not served off the host, found {a:?}"
                            ));
                        }
                        Some(addr)
                    }
                }
            }
            "log_max_bytes" => {
                let n = integer(v)?;
                if n < 4096 {
                    return Err(format!("must be at least 4096 bytes, found {n}"));
                }
                self.log_rotation.max_bytes = n as u64;
            }
            "log_keep" => {
                let n = integer(v)?;
                if !(0..=1000).contains(&n) {
                    return Err(format!("must be 0 to 1000 rotated files, found {n}"));
                }
                self.log_rotation.keep = n as u32;
            }
            "log_format" => {
                self.log_format = match string(v)?.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(format!("must be text or json, found {other:?}")),
                }
            }
            "load_balancer_poll_interval_ms" => {
                let n = integer(v)?;
                if !(100..=60_000).contains(&n) {
                    return Err(format!("must be 100 to 60000, found {n}"));
                }
                self.load_balancer_poll_ms = n as u64;
            }
            "children" if integer(v)? != 1 => return Err("children can only be set to 1".into()),
            _ => {}
        }
        Ok(())
    }

    /// The deployment root must be a directory this agent can write, made
    /// if missing: said at start, naming `:root_dir:`, rather than as a
    /// failure deep inside the first deployment.
    pub fn check_root_dir(&self) -> Result<(), String> {
        let p = &self.root_dir;
        let named = |why: String| format!(":root_dir: {}: {why}", p.display());
        match std::fs::metadata(p) {
            Ok(m) if !m.is_dir() => return Err(named("exists and is not a directory".into())),
            Ok(_) => {}
            Err(_) => {
                std::fs::create_dir_all(p).map_err(|e| named(format!("cannot create it: {e}")))?
            }
        }
        nix::unistd::access(p.as_path(), nix::unistd::AccessFlags::W_OK)
            .map_err(|e| named(format!("cannot write to it: {}", e.desc())))
    }

    /// Where the official layout keeps cross-deployment instructions.
    pub fn instructions_dir(&self) -> PathBuf {
        self.root_dir.join("deployment-instructions")
    }
}

fn is_known(key: &str) -> bool {
    matches!(
        key,
        "program_name"
            | "root_dir"
            | "log_dir"
            | "pid_dir"
            | "verbose"
            | "wait_between_runs"
            | "wait_after_error"
            | "http_read_timeout"
            | "max_revisions"
            | "proxy_uri"
            | "disable_imds_v1"
            | "enable_auth_policy"
            | "use_fips_mode"
            | "deploy_control_endpoint"
            | "s3_endpoint_override"
            | "on_premises_config_file"
            | "enable_deployments_log"
            | "time_zone"
            | "kill_agent_max_wait_time_seconds"
            | "ongoing_deployment_tracking"
            | "log_aws_wire"
            | "hook_kill_grace_seconds"
            | "hook_output_grace_seconds"
            | "runas_login_shell"
            | "ignore_ownership_in_bundle"
            | "imds_endpoint"
            | "deployment_spec_ca_file"
            | "allow_unsigned_specs"
            | "strict_deployment_spec_verification"
            | "revision_max_bytes"
            | "revision_max_entries"
            | "github_endpoint"
            | "s3_download_parts"
            | "autoscaling_endpoint"
            | "elb_endpoint"
            | "load_balancer_poll_interval_ms"
            | "metrics_textfile"
            | "metrics_listen"
            | "log_format"
            | "log_max_bytes"
            | "log_keep"
    )
}

fn string(v: &Node) -> Result<String, String> {
    match v.as_scalar() {
        Some(s) if s.value != Value::Null && !s.text.trim().is_empty() => {
            Ok(v.ruby_to_s().unwrap_or_default())
        }
        _ => Err(format!("expected a value, found {}", v.describe())),
    }
}

fn opt_string(v: &Node) -> Result<Option<String>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let s = string(v)?;
    Ok((!s.is_empty()).then_some(s))
}

fn boolean(v: &Node) -> Result<bool, String> {
    match v.as_scalar().map(|s| &s.value) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Null) => Ok(false),
        _ => Err(format!(
            "expected true or false, found {:?}",
            v.ruby_to_s().unwrap_or_default()
        )),
    }
}

fn integer(v: &Node) -> Result<i64, String> {
    match v.as_scalar().map(|s| (&s.value, s.text.trim())) {
        Some((Value::Int(i), _)) => Ok(*i),
        Some((Value::Str, t)) if t.parse::<i64>().is_ok() => Ok(t.parse().unwrap_or(0)),
        Some((Value::Str, t))
            if !t.is_empty()
                && t.trim_start_matches(['-', '+'])
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'_') =>
        {
            Err(format!("the number {t} is too large for this setting"))
        }
        _ => Err(format!(
            "expected a whole number, found {:?}",
            v.ruby_to_s().unwrap_or_default()
        )),
    }
}

fn secs(v: &Node, min: i64) -> Result<Duration, String> {
    let n = integer(v)?;
    if n < min {
        return Err(format!("must be at least {min}, found {n}"));
    }
    Ok(Duration::from_secs(n as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shipped_file_shape() {
        let text = "---\n:log_aws_wire: false\n:log_dir: '/var/log/aws/codedeploy-agent/'\n:pid_dir: '/opt/codedeploy-agent/state/.pid/'\n:program_name: codedeploy-agent\n:root_dir: '/opt/codedeploy-agent/deployment-root'\n:verbose: false\n:wait_between_runs: 1\n:proxy_uri:\n:max_revisions: 5\n";
        let (c, w) = Config::parse(text, Path::new("codedeployagent.yml")).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.wait_between_runs, Duration::from_secs(1));
        assert_eq!(
            c.root_dir,
            PathBuf::from("/opt/codedeploy-agent/deployment-root")
        );
        assert_eq!(c.proxy_uri, None);
        assert_eq!(c.max_revisions, 5);
    }

    #[test]
    fn unknown_and_colonless_keys_warn() {
        let (c, w) = Config::parse(
            ":max_revison: 3\nproxy_uri: http://p:3128\n",
            Path::new("c.yml"),
        )
        .unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().any(|m| m.contains("unknown key \":max_revison\"")));
        assert!(w.iter().any(|m| m.contains("no leading colon")));
        assert_eq!(c.proxy_uri.as_deref(), Some("http://p:3128"));
    }

    #[test]
    fn official_rust_agent_keys_are_understood() {
        let text = ":reject_path_traversal_in_bundle: true\n:restrict_hook_env_to_allowlist: true\n:strip_loader_env_in_hooks: false\n:ignore_ownership_in_bundle: true\n";
        let (c, w) = Config::parse(text, Path::new("c.yml")).unwrap();
        assert!(c.ignore_ownership_in_bundle);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("restrict_hook_env_to_allowlist") && w[0].contains("not supported"));
    }

    #[test]
    fn bad_values_fail_with_line_and_key() {
        let err = Config::parse(
            ":root_dir: /x\n:max_revisions: 0\n:time_zone: mars\n",
            Path::new("c.yml"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("c.yml:2:1: :max_revisions: must be at least 1"),
            "{msg}"
        );
        assert!(
            msg.contains("c.yml:3:1: :time_zone: must be local or utc"),
            "{msg}"
        );
    }
}
