//! A fleet behind a load balancer (docs/testbed.md, zero failures): instances with their
//! own loopback address, agent and application, the LB control plane with
//! HAProxy in front, revisions that start and stop the application, and a
//! bounded load generator that records every request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::bed::{Agent, Testbed};
use crate::bundle::Bundle;
use crate::lb::{quick_check, GroupSpec, Kind, LbPlane, LbSpec};
use crate::scenario::{create_s3_deployment_with, setup_group, setup_group_over};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    TargetGroup,
    Classic,
    /// A target group attached to an Auto Scaling group with min = desired.
    AutoScaling,
    /// A Network LB's target group (TCP): layer 4.
    Network,
}

pub const DRAIN_SECONDS: u32 = 3;

/// What an operator set on an Auto Scaling group: MinSize, desired
/// capacity, suspended processes, tags.
pub type GroupState = (i32, i32, Vec<String>, Vec<(String, String)>);

const HOOKS: &str = "  ApplicationStop:\n    - location: scripts/stop.sh\n      timeout: 60\n  ApplicationStart:\n    - location: scripts/start.sh\n  ValidateService:\n    - location: scripts/validate.sh\n      timeout: 60\n";
pub const SLOW_MS: u64 = 2000;

/// What a fleet is made of; `FleetSpec::new` gives the defaults the tests
/// share (one at a time, the short delay, no keep-alive to the targets).
#[derive(Clone, Debug)]
pub struct FleetSpec {
    pub front: Front,
    pub n: usize,
    /// A built-in configuration name, or `HOST_COUNT=N` / `FLEET_PERCENT=N`.
    pub config: String,
    /// Deregistration delay (Classic: connection draining timeout), seconds.
    pub delay: u32,
    /// Auto Scaling MinSize (desired is `n`).
    pub asg_min: i32,
    /// CodeDeploy's own traffic control on the target group `web`.
    pub traffic_control: bool,
    /// The load balancer keeps connections to the targets open between
    /// requests (as an Application LB does) and the application keeps idle
    /// connections for 75 s (longer than the LB's 60 s, as AWS advises).
    pub keep_alive: bool,
    /// The stop script SIGKILLs the application instead of SIGTERM (no
    /// graceful end), as `forever stop`-like tools may.
    pub kill_on_stop: bool,
    /// The application binds its port this long after it starts, seconds.
    pub bind_after: f64,
    /// Create the application `shop` and its group `web` (off: the user
    /// creates their own, as `testbed up` leaves it to them).
    pub setup_group: bool,
}

impl FleetSpec {
    pub fn new(front: Front, n: usize) -> FleetSpec {
        FleetSpec {
            front,
            n,
            config: "CodeDeployDefault.OneAtATime".into(),
            delay: DRAIN_SECONDS,
            asg_min: n as i32,
            traffic_control: false,
            keep_alive: false,
            kill_on_stop: false,
            bind_after: 0.0,
            setup_group: true,
        }
    }

    pub fn start(self) -> LbFleet {
        LbFleet::start_spec(self)
    }
}

pub struct LbFleet {
    pub bed: Testbed,
    pub plane: LbPlane,
    pub agents: Vec<Agent>,
    pub ids: Vec<String>,
    pub ips: Vec<String>,
    pub port: u16,
    pub front: Front,
    keep_alive: bool,
    kill_on_stop: bool,
    bind_after: f64,
    bucket: String,
}

fn addresses(n: usize) -> Vec<String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    let a = 20 + std::process::id() % 200;
    (0..n)
        .map(|i| format!("127.{a}.{}.{}", k % 250, i + 1))
        .collect()
}

impl LbFleet {
    pub fn start(front: Front, n: usize) -> LbFleet {
        FleetSpec::new(front, n).start()
    }

    /// A deployment group that uses CodeDeploy's own traffic control
    /// (BlockTraffic/AllowTraffic on the target group `web`).
    pub fn start_traffic_controlled(front: Front, n: usize) -> LbFleet {
        FleetSpec {
            traffic_control: true,
            ..FleetSpec::new(front, n)
        }
        .start()
    }

    /// `n` instances behind `front`, deployed with the deployment
    /// configuration `config`, the load balancer's deregistration delay
    /// `delay` seconds; with Auto Scaling, min = desired = `n`.
    pub fn start_with(front: Front, n: usize, config: &str, delay: u32) -> LbFleet {
        FleetSpec {
            config: config.into(),
            delay,
            ..FleetSpec::new(front, n)
        }
        .start()
    }

    /// The Auto Scaling group's MinSize, desired capacity, suspended
    /// processes and tags (sorted), when the fleet has one.
    pub fn group_state(&self) -> Option<GroupState> {
        if self.front != Front::AutoScaling {
            return None;
        }
        let (min, desired, mut suspended, _) = self.plane.group("web-asg");
        suspended.sort();
        let mut tags = self.plane.tags("web-asg");
        tags.sort();
        Some((min, desired, suspended, tags))
    }

    /// `n` instances in the Auto Scaling group `web-asg` (desired `n`,
    /// MinSize `min`), deployed with the deployment configuration `config`.
    pub fn start_asg(n: usize, min: i32, config: &str) -> LbFleet {
        FleetSpec {
            config: config.into(),
            asg_min: min,
            ..FleetSpec::new(Front::AutoScaling, n)
        }
        .start()
    }

    pub fn start_spec(spec: FleetSpec) -> LbFleet {
        let FleetSpec {
            front,
            n,
            ref config,
            delay,
            asg_min,
            traffic_control,
            keep_alive,
            kill_on_stop,
            bind_after,
            setup_group: make_group,
        } = spec;
        let bed = Testbed::new();
        let ips = addresses(n);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tag = bed
            .dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase();
        let ids: Vec<String> = (0..n)
            .map(|i| format!("i-0b{:06x}{i:02}", (port as usize) * 7 % 0xffffff))
            .collect();
        let instances: Vec<(String, String)> =
            ids.iter().cloned().zip(ips.iter().cloned()).collect();
        let (lbs, groups) = match front {
            Front::TargetGroup | Front::AutoScaling | Front::Network => (
                vec![LbSpec {
                    kind: Kind::TargetGroup,
                    name: "web".into(),
                    port,
                    health: quick_check("/health"),
                    delay,
                    draining_enabled: true,
                    registered: Vec::new(),
                    keep_alive,
                    layer4: front == Front::Network,
                }],
                if front == Front::AutoScaling {
                    vec![GroupSpec {
                        name: "web-asg".into(),
                        min: asg_min,
                        max: n as i32 + 2,
                        instances: ids.clone(),
                        load_balancers: Vec::new(),
                        target_groups: vec!["web".into()],
                    }]
                } else {
                    Vec::new()
                },
            ),
            Front::Classic => (
                vec![LbSpec {
                    kind: Kind::Classic,
                    name: "web".into(),
                    port,
                    health: quick_check("/health"),
                    delay: delay + 5,
                    draining_enabled: true,
                    registered: Vec::new(),
                    keep_alive,
                    layer4: false,
                }],
                Vec::new(),
            ),
        };
        let plane = LbPlane::start(bed.dir.path(), bed.keys.clone(), &instances, lbs, groups);
        // Deployment groups made with --auto-scaling-groups deploy to the
        // group's InService members.
        bed.control.attach_auto_scaling(plane.members_of());
        bed.control.attach_traffic_control(plane.traffic_control());
        if front == Front::AutoScaling {
            // The group registers its members with its target groups.
            for id in &ids {
                plane.register_for_group(id);
            }
        }
        let extra = format!(
            ":autoscaling_endpoint: {ep}\n:elb_endpoint: {ep}\n:load_balancer_poll_interval_ms: 250\n",
            ep = plane.endpoint()
        );
        let agents = ids
            .iter()
            .zip(&ips)
            .map(|(id, ip)| {
                let mut a = bed.instance_at(id, &[("role", "web")], ip, &extra);
                // What copied scripts need to call the LB API: the agent's
                // own environment stays free of credentials.
                std::fs::write(
                    a.dir.join("aws.env"),
                    format!(
                        "export LB_ENDPOINT={} TG_ARN={} AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={} AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true\n",
                        plane.endpoint(),
                        crate::lb::tg_arn("web"),
                        crate::control::OPERATOR_KEY,
                        crate::control::OPERATOR_SECRET,
                        crate::control::REGION
                    ),
                )
                .unwrap();
                start_agent(&mut a, id, ip, port);
                a
            })
            .collect();
        if make_group && traffic_control {
            setup_group_over(
                &bed,
                "CodeDeployDefault.OneAtATime",
                &[
                    "--ec2-tag-filters",
                    "Key=role,Value=web,Type=KEY_AND_VALUE",
                    "--load-balancer-info",
                    "targetGroupInfoList=[{name=web}]",
                    "--deployment-style",
                    "deploymentType=IN_PLACE,deploymentOption=WITH_TRAFFIC_CONTROL",
                ],
            );
        } else if make_group {
            setup_group(&bed, &deployment_config(&bed, config));
        }
        LbFleet {
            bed,
            plane,
            agents,
            ids,
            ips,
            port,
            front,
            keep_alive,
            kill_on_stop,
            bind_after,
            bucket: format!(
                "lb-{}",
                tag.replace(|c: char| !c.is_ascii_alphanumeric(), "")
            ),
        }
    }

    /// The `loadBalancer` section that fits this fleet.
    pub fn section(&self) -> String {
        match self.front {
            Front::TargetGroup | Front::Network => "loadBalancer:\n  targetGroups:\n    - name: web\n  healthGate:\n    interval: 1\n    timeout: 30\n".into(),
            Front::Classic => "loadBalancer:\n  classicLoadBalancers: [web]\n  healthGate:\n    interval: 1\n    timeout: 30\n".into(),
            Front::AutoScaling => "loadBalancer:\n  autoScaling:\n    action: standby\n    minSize: lower\n  healthGate:\n    interval: 1\n    timeout: 30\n".into(),
        }
    }

    /// Deploy v1 with `section` (which registers the fleet) and wait until
    /// every instance serves.
    pub fn serve_v1(&self, section: &str) {
        let d = self.deploy("v1", section, 0);
        let status = self.bed.wait_deployment(&d, crate::scenario::LIMIT);
        assert_eq!(status, "Succeeded", "{}", self.logs());
        crate::wait_until(Duration::from_secs(30), "every instance serving", || {
            self.plane.serving("web") == self.ids.len()
        });
    }

    /// Deploy `revision` with `section` appended to its appspec; returns
    /// the deployment id.
    pub fn deploy(&self, revision: &str, section: &str, validate_exit: i32) -> String {
        self.deploy_with(revision, HOOKS, section, validate_exit, &[])
    }

    /// Deploy `revision` with the appspec `hooks` (the bundle's scripts:
    /// scripts/start.sh, stop.sh, validate.sh) and `section`.
    pub fn deploy_hooks(&self, revision: &str, hooks: &str, section: &str) -> String {
        self.deploy_with(revision, hooks, section, 0, &[])
    }

    /// The same, with ApplicationStop failures ignored by the service.
    pub fn deploy_ignoring_stop_failures(&self, revision: &str, section: &str) -> String {
        let extra = ["--ignore-application-stop-failures"];
        self.deploy_with(revision, HOOKS, section, 0, &extra)
    }

    /// Deploy `revision` the way users' copied scripts do it (docs/loadbalancer.md
    /// 1): deregister from the target group with the AWS CLI, `sleep` a
    /// fixed drain time, stop; start, `sleep` a fixed warm-up, register.
    pub fn deploy_scripts(&self, revision: &str, drain_sleep: f64, start_sleep: f64) -> String {
        assert_eq!(self.front, Front::TargetGroup, "the scripts speak ELBv2");
        // The scripts' timeouts leave room for their sleeps (a user who
        // copies a 300 s sleep under a 300 s timeout fails every deployment).
        let t = (drain_sleep.max(start_sleep) as u64 + 120).max(300);
        let hooks = format!("  ApplicationStop:\n    - location: scripts/deregister.sh\n      timeout: {t}\n    - location: scripts/stop.sh\n      timeout: 60\n  ApplicationStart:\n    - location: scripts/start.sh\n    - location: scripts/register.sh\n      timeout: {t}\n  ValidateService:\n    - location: scripts/validate.sh\n      timeout: 60\n");
        let cli = "python3 -m awscli elbv2 --endpoint-url \"$LB_ENDPOINT\"";
        let targets =
            "--target-group-arn \"$TG_ARN\" --targets \"Id=$APP_INSTANCE,Port=$APP_PORT\"";
        let dir = self.bundle_dir(revision);
        let b = Bundle::new(&dir);
        b.script(
            "scripts/deregister.sh",
            &format!("#!/bin/sh\nset -e\n. \"$APP_DIR/aws.env\"\n{cli} deregister-targets {targets}\nsleep {drain_sleep}\n"),
        );
        b.script(
            "scripts/register.sh",
            &format!("#!/bin/sh\nset -e\n. \"$APP_DIR/aws.env\"\nsleep {start_sleep}\n{cli} register-targets {targets}\n"),
        );
        self.deploy_with(revision, &hooks, "", 0, &[])
    }

    fn bundle_dir(&self, revision: &str) -> PathBuf {
        self.bed.path(&format!("bundle-{revision}"))
    }

    fn deploy_with(
        &self,
        revision: &str,
        hooks: &str,
        section: &str,
        validate_exit: i32,
        extra: &[&str],
    ) -> String {
        let b = Bundle::new(self.bundle_dir(revision));
        b.file("scripts/app.py", include_str!("../fixtures/lbapp.py"));
        let keep = if self.keep_alive { 75 } else { 0 };
        let (bind, signal) = (
            self.bind_after,
            if self.kill_on_stop { "KILL" } else { "TERM" },
        );
        b.script(
            "scripts/start.sh",
            &format!("#!/bin/sh\nset -e\nsetsid python3 \"$(dirname \"$0\")/app.py\" --ip \"$APP_IP\" --port \"$APP_PORT\" --instance \"$APP_INSTANCE\" --revision {revision} --ready-after 1.5 --keep-alive {keep} --bind-after {bind} >>\"$APP_DIR/app.log\" 2>&1 </dev/null &\necho $! > \"$APP_DIR/app.pid\"\n"),
        );
        b.script(
            "scripts/stop.sh",
            &format!("#!/bin/sh\ntouch \"$APP_DIR/stop-started\"\nwhile [ -f \"$APP_DIR/hold-stop\" ]; do sleep 0.05; done\n[ -f \"$APP_DIR/app.pid\" ] || exit 0\npid=$(cat \"$APP_DIR/app.pid\")\nif kill -{signal} \"$pid\" 2>/dev/null; then\n  i=0\n  while kill -0 \"$pid\" 2>/dev/null; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.05; done\nfi\nrm -f \"$APP_DIR/app.pid\"\n"),
        );
        b.script(
            "scripts/validate.sh",
            &format!("#!/bin/sh\nexit {validate_exit}\n"),
        );
        b.appspec(&format!(
            "version: 0.0\nos: linux\nhooks:\n{hooks}{section}"
        ));
        let file = b.tgz(&self.bed.path(&format!("{revision}.tgz")));
        let key = format!("shop/{revision}.tgz");
        self.bed.upload(&self.bucket, &key, &file);
        create_s3_deployment_with(
            &self.bed,
            &format!("bucket={},key={key},bundleType=tgz", self.bucket),
            extra,
        )
    }

    pub fn frontend(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.plane.frontend("web")))
    }

    /// One request through the load balancer: the revision that answered
    /// with 200, or `None` for anything else.
    pub fn served_revision(&self) -> Option<String> {
        let rt = crate::server::runtime();
        let addr = self.frontend();
        rt.block_on(async move {
            let conn = TcpStream::connect(addr).await.ok()?;
            let (status, _, rev, _) = request(&mut BufReader::new(conn), "/", true).await.ok()?;
            (status == 200).then_some(rev)
        })
    }

    /// A request to the slow endpoint through the load balancer, held for
    /// `ms` in a thread of its own: a drain that begins meanwhile has
    /// something in flight, so it lasts its delay (the load balancers end
    /// an idle drain at once).
    pub fn hold_request(&self, ms: u64) -> std::thread::JoinHandle<()> {
        let addr = self.frontend();
        std::thread::spawn(move || {
            let rt = crate::server::runtime();
            rt.block_on(async move {
                if let Ok(conn) = TcpStream::connect(addr).await {
                    let path = format!("/slow?ms={ms}");
                    let _ = request(&mut BufReader::new(conn), &path, true).await;
                }
            });
        })
    }

    pub fn logs(&self) -> String {
        crate::scenario::logs(&self.agents)
    }

    pub fn app_running(&self, i: usize) -> bool {
        std::fs::read_to_string(self.agents[i].dir.join("app.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .is_some_and(crate::alive)
    }

    /// SIGKILL instance `i`'s agent (its scripts and application live on,
    /// as after a crash) and start it again.
    pub fn crash_and_restart(&mut self, i: usize) {
        self.agents[i].kill();
        let (id, ip, port) = (self.ids[i].clone(), self.ips[i].clone(), self.port);
        start_agent(&mut self.agents[i], &id, &ip, port);
    }

    /// While this file exists, instance `i`'s stop script waits before it
    /// stops the application (after writing `stop-started`).
    pub fn hold_stop(&self, i: usize) -> PathBuf {
        self.agents[i].dir.join("hold-stop")
    }

    /// The phase recorded in instance `i`'s drain journal, if one exists.
    pub fn journal_phase(&self, i: usize) -> Option<String> {
        let dir = std::fs::read_dir(self.journal_dir(i)).ok()?;
        dir.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .find_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                v["phase"].as_str().map(str::to_string)
            })
    }

    pub fn journal_dir(&self, i: usize) -> PathBuf {
        self.agents[i].root().join("load-balancer")
    }

    pub fn journals(&self) -> usize {
        (0..self.agents.len())
            .map(|i| {
                std::fs::read_dir(self.journal_dir(i))
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Drop for LbFleet {
    /// The applications run detached from their agents (as on a host);
    /// a finished fleet takes them down, whatever state it ended in.
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill();
            let pid = std::fs::read_to_string(a.dir.join("app.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A built-in configuration's name, or `HOST_COUNT=N` / `FLEET_PERCENT=N`:
/// a custom minimum-healthy-hosts configuration, created here.
fn deployment_config(bed: &Testbed, config: &str) -> String {
    let Some((kind, value)) = config.split_once('=') else {
        return config.to_string();
    };
    let name = format!("fleet-{}-{value}", kind.to_lowercase());
    bed.aws_ok(&[
        "deploy",
        "create-deployment-config",
        "--deployment-config-name",
        &name,
        "--minimum-healthy-hosts",
        &format!("type={kind},value={value}"),
    ]);
    name
}

fn start_agent(a: &mut Agent, id: &str, ip: &str, port: u16) {
    let dir = a.dir.display().to_string();
    a.start_with_env(&[
        ("APP_IP", ip),
        ("APP_PORT", &port.to_string()),
        ("APP_INSTANCE", id),
        ("APP_DIR", dir.as_str()),
    ]);
}

/// One request the load generator made.
#[derive(Clone, Debug)]
pub struct Sample {
    pub start: Instant,
    pub end: Instant,
    pub slow: bool,
    /// HTTP status, or 0 for a transport error.
    pub status: u16,
    pub error: String,
    pub instance: String,
    pub revision: String,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

async fn request(
    stream: &mut BufReader<TcpStream>,
    path: &str,
    close: bool,
) -> Result<(u16, String, String, bool), String> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: web\r\nUser-Agent: testbed-load\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    stream
        .get_mut()
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    stream
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut len, mut inst, mut rev, mut keep) = (0usize, String::new(), String::new(), !close);
    loop {
        let mut h = String::new();
        stream.read_line(&mut h).await.map_err(|e| e.to_string())?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        let v = v.trim();
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.parse().unwrap_or(0),
            "x-instance" => inst = v.to_string(),
            "x-revision" => rev = v.to_string(),
            "connection" if v.eq_ignore_ascii_case("close") => keep = false,
            _ => {}
        }
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, inst, rev, keep))
}

impl Load {
    /// `fast` workers on keep-alive connections, `fresh` workers opening a
    /// connection per request, `slow` workers asking for SLOW_MS requests.
    pub fn start(target: SocketAddr, fast: usize, fresh: usize, slow: usize) -> Load {
        Load::with_slow(target, (fast, fresh, slow), SLOW_MS)
    }

    /// The same, the slow requests lasting `slow_ms`.
    pub fn with_slow(target: SocketAddr, clients: (usize, usize, usize), slow_ms: u64) -> Load {
        let (fast, fresh, slow) = clients;
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let rt = crate::server::runtime();
        let mut handles = Vec::new();
        for w in 0..fast + fresh + slow {
            let (stop, samples) = (stop.clone(), samples.clone());
            let keep_alive = w < fast;
            let is_slow = w >= fast + fresh;
            handles.push(rt.spawn(async move {
                let mut conn: Option<BufReader<TcpStream>> = None;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let path = if is_slow {
                        format!("/slow?ms={slow_ms}")
                    } else {
                        "/".to_string()
                    };
                    if conn.is_none() {
                        conn = TcpStream::connect(target).await.ok().map(BufReader::new);
                    }
                    let r = match conn.as_mut() {
                        Some(c) => request(c, &path, !keep_alive).await,
                        None => Err("connect failed".into()),
                    };
                    let end = Instant::now();
                    let s = match r {
                        Ok((status, instance, revision, keep)) => {
                            if !keep {
                                conn = None;
                            }
                            Sample {
                                start,
                                end,
                                slow: is_slow,
                                status,
                                error: String::new(),
                                instance,
                                revision,
                            }
                        }
                        Err(e) => {
                            conn = None;
                            Sample {
                                start,
                                end,
                                slow: is_slow,
                                status: 0,
                                error: e,
                                instance: String::new(),
                                revision: String::new(),
                            }
                        }
                    };
                    samples.lock().unwrap().push(s);
                    if !keep_alive && !is_slow {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
        Load {
            stop,
            samples,
            handles,
        }
    }

    pub fn count(&self) -> usize {
        self.samples.lock().unwrap().len()
    }

    /// Stop, let requests in flight finish, and return every sample.
    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let rt = crate::server::runtime();
        for h in self.handles {
            let _ = rt.block_on(h);
        }
        let v = self.samples.lock().unwrap().clone();
        v
    }
}

/// Failed requests: non-2xx answers and transport errors.
pub fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| !(200..300).contains(&s.status))
        .collect()
}

/// A slow request to `instance` in flight at `at` that succeeded.
pub fn slow_in_flight(samples: &[Sample], instance: &str, at: Instant) -> bool {
    samples.iter().any(|s| {
        s.slow && s.instance == instance && s.status == 200 && s.start <= at && s.end >= at
    })
}
