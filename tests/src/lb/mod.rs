//! The load balancer control plane (docs/testbed.md, LB plane): Auto Scaling, Classic
//! ELB and ELBv2 query APIs on one loopback endpoint (told apart by
//! `Version`, as the two ELB APIs are in AWS), SigV4 checked, paginated, with
//! health checks and drains carried out on a real HAProxy.

pub mod api;
pub mod haproxy;
pub mod model;
pub mod query;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::control::REGION;
use crate::faults::Faults;
use crate::server::{self, Reply};
use crate::sigv4::{self, Keyring};
use haproxy::{HaProxy, Listener};
use model::{Backend, Group, Member, World};
pub use model::{Change, HealthCheck, Kind, Seen, State, Transition};

/// Health check settings scaled for tests: 1 s probes, 2 to be healthy.
pub fn quick_check(path: &str) -> HealthCheck {
    HealthCheck {
        protocol: "HTTP".into(),
        port: None,
        path: path.into(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        healthy: 2,
        unhealthy: 2,
        matcher: "200".into(),
    }
}

/// One load balancer resource to create.
pub struct LbSpec {
    pub kind: Kind,
    pub name: String,
    /// Target group port / Classic LB instance port.
    pub port: u16,
    pub health: HealthCheck,
    /// Deregistration delay / connection draining timeout (seconds).
    pub delay: u32,
    pub draining_enabled: bool,
    /// Instances registered at start (healthy at once).
    pub registered: Vec<String>,
    /// Connections to the targets kept open between requests, as an
    /// Application LB keeps them (docs/testbed.md, the drain rules).
    pub keep_alive: bool,
    /// A Network LB's target group (TCP, layer 4).
    pub layer4: bool,
}

pub struct GroupSpec {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub instances: Vec<String>,
    pub load_balancers: Vec<String>,
    pub target_groups: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbFault {
    Throttle,
    ServerError,
    /// 403 AccessDenied: not retried by SDK clients.
    AccessDenied,
    Latency(Duration),
}

struct Inner {
    world: Mutex<World>,
    hap: HaProxy,
    keys: Keyring,
    faults: Faults<LbFault>,
    calls: Mutex<Vec<(String, Instant, u16)>>,
}

#[derive(Clone)]
pub struct LbPlane {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
    /// Frontend port of each load balancer, by name.
    pub frontends: Vec<(String, u16)>,
}

pub fn tg_arn(name: &str) -> String {
    format!(
        "arn:aws:elasticloadbalancing:{REGION}:123456789012:targetgroup/{name}/0123456789abcdef"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl LbPlane {
    /// `instances`: every "running" EC2 instance and its address.
    pub fn start(
        dir: &Path,
        keys: Keyring,
        instances: &[(String, String)],
        lbs: Vec<LbSpec>,
        groups: Vec<GroupSpec>,
    ) -> LbPlane {
        let frontends: Vec<(String, u16)> =
            lbs.iter().map(|l| (l.name.clone(), free_port())).collect();
        let listeners: Vec<Listener> = lbs
            .iter()
            .zip(&frontends)
            .map(|(l, (name, port))| Listener {
                name: name.clone(),
                port: *port,
                keep_alive: l.keep_alive,
                tcp: l.layer4,
            })
            .collect();
        let hap = HaProxy::start(dir, &listeners);
        let mut w = World {
            instances: instances.iter().cloned().collect(),
            backends: Vec::new(),
            groups: Vec::new(),
            changes: Vec::new(),
            transitions: Vec::new(),
            pending_for: Duration::from_millis(500),
        };
        for (l, (_, fe)) in lbs.into_iter().zip(&frontends) {
            w.backends.push(Backend {
                kind: l.kind,
                arn: if l.kind == Kind::TargetGroup {
                    tg_arn(&l.name)
                } else {
                    String::new()
                },
                name: l.name,
                port: l.port,
                frontend: *fe,
                hc: l.health,
                delay: l.delay,
                draining_enabled: l.draining_enabled,
                layer4: l.layer4,
                has_load_balancer: true,
                regs: Vec::new(),
            });
            let b = w.backends.len() - 1;
            for id in l.registered {
                w.register(b, &id, l.port).expect("known instance");
                let r = w.backends[b].regs.last_mut().unwrap();
                r.state = State::Healthy;
                r.reason.clear();
            }
        }
        for g in groups {
            w.groups.push(Group {
                name: g.name,
                min: g.min,
                max: g.max,
                desired: g.instances.len() as i32,
                members: g
                    .instances
                    .iter()
                    .map(|id| Member {
                        id: id.clone(),
                        state: "InService".into(),
                        until: None,
                    })
                    .collect(),
                load_balancers: g.load_balancers,
                target_groups: g.target_groups.iter().map(|n| tg_arn(n)).collect(),
                suspended: BTreeSet::new(),
                tags: Default::default(),
            });
        }
        w.advance(&hap);
        let inner = Arc::new(Inner {
            world: Mutex::new(w),
            hap,
            keys,
            faults: Faults::default(),
            calls: Mutex::new(Vec::new()),
        });
        // The API server holds the plane weakly: dropping the last LbPlane
        // drops HAProxy with it.
        let h = Arc::downgrade(&inner);
        let addr = server::serve(Arc::new(move |req| {
            let h = h.clone();
            Box::pin(async move {
                match h.upgrade() {
                    Some(inner) => handle(inner, req).await,
                    None => Ok(server::text_response(503, "load balancer plane stopped")),
                }
            })
        }));
        server::runtime().spawn(tick(Arc::downgrade(&inner)));
        LbPlane {
            inner,
            addr,
            frontends,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn frontend(&self, name: &str) -> u16 {
        self.frontends
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .expect("frontend")
    }

    pub fn inject(&self, action: Option<&str>, kind: LbFault, times: u32) {
        self.inner.faults.inject(action, kind, times);
    }

    pub fn faults_pending(&self) -> u32 {
        self.inner.faults.pending()
    }

    /// Every call: (action, when, HTTP status answered).
    pub fn calls(&self) -> Vec<(String, Instant, u16)> {
        self.inner.calls.lock().unwrap().clone()
    }

    pub fn changes(&self) -> Vec<Change> {
        self.inner.world.lock().unwrap().changes.clone()
    }

    /// Every registration's data-plane history.
    pub fn transitions(&self) -> Vec<Transition> {
        self.inner.world.lock().unwrap().transitions.clone()
    }

    /// (state, reason) of every registration of `id` in `lb`.
    pub fn registrations(&self, lb: &str, id: &str) -> Vec<(u16, State)> {
        let w = self.inner.world.lock().unwrap();
        let b = w.backend(lb).expect("lb");
        w.backends[b]
            .regs
            .iter()
            .filter(|r| r.id == id)
            .map(|r| (r.port, r.state))
            .collect()
    }

    /// (min, desired, suspended processes, lifecycle state of each member).
    pub fn group(&self, name: &str) -> (i32, i32, Vec<String>, Vec<(String, String)>) {
        let w = self.inner.world.lock().unwrap();
        let g = w.groups.iter().find(|g| g.name == name).expect("group");
        (
            g.min,
            g.desired,
            g.suspended.iter().cloned().collect(),
            g.members
                .iter()
                .map(|m| (m.id.clone(), m.state.clone()))
                .collect(),
        )
    }

    /// What the group does for its InService members: register them with
    /// its load balancers (on the target groups' ports).
    pub fn register_for_group(&self, id: &str) {
        let mut w = self.inner.world.lock().unwrap();
        let names: Vec<String> = w
            .groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m.id == id))
            .flat_map(|g| g.target_groups.iter().chain(&g.load_balancers).cloned())
            .collect();
        for n in names {
            if let Some(b) = w.backend(&n) {
                let port = w.backends[b].port;
                let _ = w.register(b, id, port);
            }
        }
        w.advance(&self.inner.hap);
    }

    /// Deregister every registration of `id` in `lb`, as DeregisterTargets
    /// (or DeregisterInstancesFromLoadBalancer) would.
    pub fn deregister(&self, lb: &str, id: &str) {
        let mut w = self.inner.world.lock().unwrap();
        let b = w.backend(lb).expect("lb");
        w.deregister_instance(b, id);
        w.record("DeregisterTargets", id, lb);
        w.advance(&self.inner.hap);
    }

    /// Connections open from load balancer `lb` to its targets, in use or
    /// idle in HAProxy's pool.
    pub fn connections(&self, lb: &str) -> u64 {
        total(self.inner.hap.server_connections(), lb)
    }

    /// CodeDeploy's own traffic control over this plane: BlockTraffic
    /// deregisters the instance from the deployment group's target groups
    /// and waits until each reports it `unused` (the delay, as the service
    /// waits); AllowTraffic registers it and waits until each reports it
    /// `healthy` (failing after 5 minutes, as the service's own wait does not
    /// end sooner).
    pub fn traffic_control(&self) -> crate::control::state::TrafficControl {
        let w = Arc::downgrade(&self.inner);
        Arc::new(move |event: &str, id: &str, tgs: &[String]| {
            let Some(inner) = w.upgrade() else {
                return false;
            };
            let block = event == "BlockTraffic";
            for tg in tgs {
                let bound = {
                    let mut w = inner.world.lock().unwrap();
                    let Some(b) = w.backend(tg) else {
                        return false;
                    };
                    let port = w.backends[b].port;
                    if block {
                        w.deregister(b, id, port);
                    } else if w.register(b, id, port).is_err() {
                        return false;
                    }
                    w.record(event, id, tg);
                    w.advance(&inner.hap);
                    let delay = u64::from(w.backends[b].delay);
                    Duration::from_secs(if block { delay + 30 } else { 300 })
                };
                let done = |w: &World| {
                    let b = w.backend(tg).expect("target group");
                    let mine = w.backends[b].regs.iter().filter(|r| r.id == id);
                    if block {
                        mine.count() == 0
                    } else {
                        mine.clone().count() > 0 && mine.clone().all(|r| r.state == State::Healthy)
                    }
                };
                let deadline = Instant::now() + bound;
                while !done(&inner.world.lock().unwrap()) {
                    if Instant::now() > deadline {
                        return false;
                    }
                    // The service's own polling of the target's state.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            true
        })
    }

    /// The InService members of Auto Scaling group `name`, now: what
    /// CodeDeploy deploys to for a deployment group made with
    /// `--auto-scaling-groups`.
    pub fn members_of(&self) -> crate::control::state::AsgMembers {
        let w = Arc::downgrade(&self.inner);
        Arc::new(move |name: &str| {
            let Some(inner) = w.upgrade() else {
                return Vec::new();
            };
            let w = inner.world.lock().unwrap();
            w.groups
                .iter()
                .filter(|g| g.name == name)
                .flat_map(|g| g.members.iter())
                .filter(|m| m.state == "InService")
                .map(|m| m.id.clone())
                .collect()
        })
    }

    /// The group's tags.
    pub fn tags(&self, group: &str) -> Vec<(String, String)> {
        let w = self.inner.world.lock().unwrap();
        let g = w.groups.iter().find(|g| g.name == group).expect("group");
        g.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn change_group(&self, name: &str, f: impl FnOnce(&mut Group)) {
        let mut w = self.inner.world.lock().unwrap();
        f(w.groups.iter_mut().find(|g| g.name == name).expect("group"));
    }

    /// What another host left: a tag and a lowered minimum.
    pub fn set_group(&self, group: &str, min: i32, tag: Option<(&str, &str)>) {
        self.change_group(group, |g| {
            g.min = min;
            if let Some((k, v)) = tag {
                g.tags.insert(k.into(), v.into());
            }
        });
    }

    pub fn suspend(&self, group: &str, process: &str) {
        self.change_group(group, |g| {
            g.suspended.insert(process.into());
        });
    }

    /// Requests in flight through load balancer `lb` now, as HAProxy counts
    /// its sessions.
    pub fn sessions(&self, lb: &str) -> u64 {
        total(self.inner.hap.sessions(), lb)
    }

    /// Registrations of `lb` serving now (healthy).
    pub fn serving(&self, lb: &str) -> usize {
        let w = self.inner.world.lock().unwrap();
        let b = w.backend(lb).expect("lb");
        w.backends[b]
            .regs
            .iter()
            .filter(|r| r.state == State::Healthy)
            .count()
    }
}

/// The sum over `lb`'s server slots of HAProxy's per-slot counts.
fn total(per_slot: Vec<(String, usize, u64)>, lb: &str) -> u64 {
    per_slot
        .into_iter()
        .filter(|(b, _, _)| b == lb)
        .map(|(_, _, n)| n)
        .sum()
}

async fn handle(inner: Arc<Inner>, req: Request<Bytes>) -> Reply {
    let form = query::parse_form(req.body());
    let action = form.get("Action").cloned().unwrap_or_default();
    let version = form.get("Version").cloned().unwrap_or_default();
    let rid = request_id();
    let (ns, service) = match version.as_str() {
        "2011-01-01" => (
            "http://autoscaling.amazonaws.com/doc/2011-01-01/",
            "autoscaling",
        ),
        "2012-06-01" => (
            "http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/",
            "elasticloadbalancing",
        ),
        "2015-12-01" => (
            "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
            "elasticloadbalancing",
        ),
        _ => {
            return Ok(xml(
                400,
                query::error(
                    "InvalidAction",
                    &format!("unknown Version {version:?}"),
                    &rid,
                    true,
                ),
                &inner,
                &action,
            ))
        }
    };
    if let Err(e) = sigv4::verify(&req, &inner.keys, REGION, service) {
        return Ok(xml(
            403,
            query::error("SignatureDoesNotMatch", &e, &rid, true),
            &inner,
            &action,
        ));
    }
    let fault = inner.faults.take(|a| a.is_none_or(|a| a == action));
    match fault {
        Some(LbFault::Throttle) => {
            return Ok(xml(
                400,
                query::error("Throttling", "Rate exceeded", &rid, true),
                &inner,
                &action,
            ))
        }
        Some(LbFault::ServerError) => {
            return Ok(xml(
                500,
                query::error(
                    "InternalFailure",
                    "We encountered an internal error. Please try again.",
                    &rid,
                    false,
                ),
                &inner,
                &action,
            ))
        }
        Some(LbFault::AccessDenied) => {
            return Ok(xml(
                403,
                query::error(
                    "AccessDenied",
                    &format!("User is not authorized to perform: {action}"),
                    &rid,
                    true,
                ),
                &inner,
                &action,
            ))
        }
        Some(LbFault::Latency(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let answer = {
        let mut w = inner.world.lock().unwrap();
        let a = match version.as_str() {
            "2011-01-01" => api::autoscaling(&mut w, &action, &form),
            "2012-06-01" => api::classic(&mut w, &action, &form),
            _ => api::elbv2(&mut w, &action, &form),
        };
        w.advance(&inner.hap);
        a
    };
    Ok(match answer {
        Ok(result) => xml(200, query::ok(ns, &action, &result, &rid), &inner, &action),
        Err(f) => xml(
            f.status,
            query::error(&f.code, &f.message, &rid, f.status < 500),
            &inner,
            &action,
        ),
    })
}

/// Unique per call and per process, like AWS request ids are.
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "req-{:x}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn xml(status: u16, body: String, inner: &Inner, action: &str) -> Response<Bytes> {
    inner
        .calls
        .lock()
        .unwrap()
        .push((action.to_string(), Instant::now(), status));
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(Bytes::from(body))
        .expect("response")
}

/// The control plane's clock: probes due registrations, finishes drains,
/// moves Auto Scaling instances on, and keeps HAProxy in step.
async fn tick(weak: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(inner) = weak.upgrade() else { return };
        let due = {
            let mut w = inner.world.lock().unwrap();
            w.advance(&inner.hap);
            let now = Instant::now();
            let mut due = Vec::new();
            for (b, be) in w.backends.iter_mut().enumerate() {
                let hc = be.hc.clone();
                for r in be.regs.iter_mut() {
                    if r.state != State::Draining && !r.probing && r.next_probe <= now {
                        r.probing = true;
                        r.next_probe = now + hc.interval;
                        due.push((b, r.id.clone(), r.port, r.ip.clone(), hc.clone()));
                    }
                }
            }
            due
        };
        for (b, id, port, ip, hc) in due {
            let weak = Arc::downgrade(&inner);
            tokio::spawn(async move {
                let res = probe(&ip, hc.port.unwrap_or(port), &hc).await;
                if let Some(inner) = weak.upgrade() {
                    let mut w = inner.world.lock().unwrap();
                    w.probed(b, &id, port, res);
                    w.advance(&inner.hap);
                }
            });
        }
    }
}

async fn probe(ip: &str, port: u16, hc: &HealthCheck) -> Result<(), String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|_| "Target.FailedHealthChecks".to_string())?;
        if hc.protocol != "HTTP" {
            return Ok(());
        }
        let req = format!("GET {} HTTP/1.1\r\nHost: {ip}\r\nUser-Agent: ELB-HealthChecker/2.0\r\nConnection: close\r\n\r\n", hc.path);
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let line = String::from_utf8_lossy(&buf);
        let code = line.split_whitespace().nth(1).unwrap_or("");
        if hc.matcher.split(',').any(|m| m.trim() == code) {
            Ok(())
        } else {
            Err("Target.ResponseCodeMismatch".to_string())
        }
    };
    tokio::time::timeout(hc.timeout, fut)
        .await
        .unwrap_or_else(|_| Err("Target.Timeout".into()))
}
