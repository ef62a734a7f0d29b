//! A whole CodeDeploy world on loopback: control plane (public + commands
//! API), signer CA, GitHub, S3 (moto behind a fault proxy), and agent
//! processes, each a simulated EC2 instance with its own IMDS, config and
//! deployment root. The AWS CLI drives it as users drive CodeDeploy.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::control::{self, ControlPlane};
use crate::faulty::FaultyProxy;
use crate::github::GitHub;
use crate::imds::{Imds, ImdsMode};
use crate::signer::Authority;
use crate::sigv4::Keyring;
use crate::{agent_bin, wait_until};

/// One moto server per test process, stopped when the process ends.
pub struct Moto {
    pub addr: SocketAddr,
    /// The watchdog shell; it outlives this process only briefly.
    _watchdog: Child,
}

pub fn moto() -> &'static Moto {
    static M: OnceLock<Moto> = OnceLock::new();
    M.get_or_init(|| {
        let port = free_port();
        // The wrapper stops moto when this test process is gone (tests
        // that fail still clean up); its `sleep` is a watchdog interval.
        let script = format!(
            "python3 -m moto.server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null",
            std::process::id()
        );
        let watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("start moto (pip install 'moto[server]'; .ci/run does)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until(Duration::from_secs(60), "moto server answers", || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        Moto { addr, _watchdog: watchdog }
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Testbed {
    pub dir: tempfile::TempDir,
    pub ca: Authority,
    pub keys: Keyring,
    pub control: ControlPlane,
    pub github: GitHub,
    /// S3 as the agents see it: moto behind a fault proxy.
    pub s3: FaultyProxy,
    pub moto: SocketAddr,
}

impl Default for Testbed {
    fn default() -> Self {
        Self::new()
    }
}

impl Testbed {
    pub fn new() -> Testbed {
        let mut dir = tempfile::Builder::new()
            .prefix("testbed-")
            .tempdir()
            .expect("tempdir");
        // TESTBED_KEEP=1 keeps every instance's logs and deployment root
        // for a post-mortem.
        if std::env::var_os("TESTBED_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("testbed kept at {}", dir.path().display());
        }
        let ca = Authority::new("CodeDeploy testbed signer CA");
        fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let keys = Keyring::default();
        let control = ControlPlane::start(&ca, keys.clone());
        let m = moto().addr;
        Testbed {
            dir,
            ca,
            keys,
            control,
            github: GitHub::start(),
            s3: FaultyProxy::start(m),
            moto: m,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Run the AWS CLI against the control plane (`deploy ...`) or moto
    /// (`s3`, `s3api`, and `ec2`, `autoscaling`, `elb`, `elbv2` for the
    /// independent check of the load balancer calls); returns its JSON output.
    pub fn aws(&self, args: &[&str]) -> Result<Value, String> {
        let endpoint = match args.first() {
            Some(&"deploy") => self.control.endpoint(),
            _ => format!("http://{}", self.moto),
        };
        // `python3 -m awscli`: the CLI pip installed, whatever PATH shims say.
        let out = Command::new("python3")
            .args([
                "-m",
                "awscli",
                "--endpoint-url",
                &endpoint,
                "--region",
                control::REGION,
                "--output",
                "json",
            ])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", control::OPERATOR_KEY)
            .env("AWS_SECRET_ACCESS_KEY", control::OPERATOR_SECRET)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .map_err(|e| {
                format!("cannot run the AWS CLI (pip install awscli; .ci/run does): {e}")
            })?;
        if !out.status.success() {
            return Err(format!(
                "aws {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("aws {}: not JSON ({e}): {text}", args.join(" ")))
    }

    pub fn aws_ok(&self, args: &[&str]) -> Value {
        self.aws(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A bucket with versioning on, and `file` uploaded as `key`; returns
    /// (version id, etag).
    pub fn upload(&self, bucket: &str, key: &str, file: &Path) -> (String, String) {
        if self
            .aws(&["s3api", "head-bucket", "--bucket", bucket])
            .is_err()
        {
            self.aws_ok(&["s3api", "create-bucket", "--bucket", bucket]);
            self.aws_ok(&[
                "s3api",
                "put-bucket-versioning",
                "--bucket",
                bucket,
                "--versioning-configuration",
                "Status=Enabled",
            ]);
        }
        let out = self.aws_ok(&[
            "s3api",
            "put-object",
            "--bucket",
            bucket,
            "--key",
            key,
            "--body",
            file.to_str().unwrap(),
        ]);
        (
            out["VersionId"].as_str().unwrap_or_default().to_string(),
            out["ETag"]
                .as_str()
                .unwrap_or_default()
                .trim_matches('"')
                .to_string(),
        )
    }

    /// A simulated EC2 instance with tags, known to the control plane, and
    /// its agent (not started yet).
    pub fn instance(&self, instance_id: &str, tags: &[(&str, &str)]) -> Agent {
        self.control.register_ec2(instance_id, tags);
        self.agent(instance_id, None, ImdsMode::V2Required, "")
    }

    /// An EC2 instance whose metadata service behaves as `mode`, with extra
    /// `:key: value` lines in its agent's configuration.
    pub fn instance_with(
        &self,
        instance_id: &str,
        tags: &[(&str, &str)],
        mode: ImdsMode,
        extra_config: &str,
    ) -> Agent {
        self.control.register_ec2(instance_id, tags);
        self.agent(instance_id, None, mode, extra_config)
    }

    /// An EC2 instance whose private address is `ip` (a 127.x.y.z address
    /// of its own, where its application listens and load balancers reach it).
    pub fn instance_at(
        &self,
        instance_id: &str,
        tags: &[(&str, &str)],
        ip: &str,
        extra_config: &str,
    ) -> Agent {
        self.control.register_ec2(instance_id, tags);
        self.agent_at(instance_id, None, ImdsMode::V2Required, extra_config, ip)
    }

    /// An on-premises instance's agent (registered with the CLI by the
    /// test), with `onpremises_yml` as its codedeploy.onpremises.yml. It
    /// still gets an IMDS, so a test can prove it is never asked.
    pub fn on_premises(&self, name: &str, onpremises_yml: &str) -> Agent {
        self.agent(name, Some(onpremises_yml), ImdsMode::V2Required, "")
    }

    fn agent(
        &self,
        instance_id: &str,
        onpremises: Option<&str>,
        mode: ImdsMode,
        extra_config: &str,
    ) -> Agent {
        self.agent_at(instance_id, onpremises, mode, extra_config, "127.0.0.1")
    }

    fn agent_at(
        &self,
        instance_id: &str,
        onpremises: Option<&str>,
        mode: ImdsMode,
        extra_config: &str,
        ip: &str,
    ) -> Agent {
        let imds = Imds::start(
            instance_id,
            control::REGION,
            control::ACCOUNT,
            &self.keys,
            mode,
            ip,
        );
        let dir = self.path(instance_id);
        fs::create_dir_all(&dir).unwrap();
        let onprem_file = dir.join("codedeploy.onpremises.yml");
        if let Some(text) = onpremises {
            fs::write(&onprem_file, text).unwrap();
        }
        let config = dir.join("codedeployagent.yml");
        let text = format!(
            ":program_name: codedeploy-agent\n:root_dir: {root}\n:log_dir: {dir}/log\n:pid_dir: {dir}/pid\n:wait_between_runs: 1\n:wait_after_error: 2\n:http_read_timeout: 20\n:kill_agent_max_wait_time_seconds: 60\n:hook_kill_grace_seconds: 1\n:hook_output_grace_seconds: 1\n:on_premises_config_file: {onprem}\n:deploy_control_endpoint: {control}\n:s3_endpoint_override: {s3}\n:github_endpoint: {github}\n:imds_endpoint: {imds}\n:deployment_spec_ca_file: {ca}\n{extra_config}",
            root = dir.join("root").display(),
            dir = dir.display(),
            control = self.control.endpoint(),
            s3 = self.s3.endpoint(),
            github = self.github.endpoint(),
            imds = imds.endpoint(),
            ca = self.path("ca.pem").display(),
            onprem = onprem_file.display(),
        );
        fs::write(&config, text).unwrap();
        Agent {
            dir,
            config,
            imds,
            child: None,
        }
    }

    /// Wait for a deployment to reach a final status; returns it, or
    /// `TimedOut (<status>)` so the caller's assertion can show the logs.
    pub fn wait_deployment(&self, id: &str, limit: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.control.deployment_status(id).unwrap_or_default();
            if matches!(s.as_str(), "Succeeded" | "Failed" | "Stopped") {
                return s;
            }
            if t0.elapsed() > limit {
                return format!("TimedOut ({s})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub struct Agent {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub imds: Imds,
    child: Option<Child>,
}

impl Agent {
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log/codedeploy-agent.log")).unwrap_or_default()
    }

    /// The last lines of the agent's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "--- {} log tail ---\n{}",
            self.imds.instance_id,
            lines[from..].join("\n")
        )
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Start with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "agent already running");
        let stderr = fs::File::create(self.dir.join("stderr.log")).unwrap();
        let child = Command::new(agent_bin())
            .arg("--config_file")
            .arg(&self.config)
            .arg("run")
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start agent");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// Wait for the agent process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("agent not running");
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                self.child = None;
                return st;
            }
            assert!(
                t0.elapsed() < limit,
                "agent did not exit within {limit:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
