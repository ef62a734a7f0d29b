//! The testbed control plane: the public CodeDeploy API subset the AWS CLI
//! needs, and the private commands API the agent polls, on one loopback
//! port, SigV4 verified on every request. Tests hold it in-process to
//! inject faults, tamper with specifications and read what happened.

mod commands;
pub mod model;
mod public;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use serde_json::{json, Value};

use crate::faults::Faults;
use crate::server::{self, json_response, Dropped, Reply};
use crate::signer::{Authority, SigningKey};
use crate::sigv4::{self, Keyring, Secret};
pub use state::State;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";
pub const OPERATOR_KEY: &str = "AKIDTESTBEDOPERATOR1";
pub const OPERATOR_SECRET: &str = "testbed-operator-secret";

/// How a deployment specification is spoiled before it is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// One byte of the signed JSON changed after signing.
    Content,
    /// Signed by a CA the agent does not trust, with the right subject.
    UntrustedSigner,
    /// Signed by the trusted CA, but for another region.
    WrongSubject,
    /// Sent as unsigned TEXT/JSON.
    Unsigned,
    /// Signed with the right subject by a signer whose intermediate, in
    /// the trusted chain, expired years ago.
    ExpiredChain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// HTTP 500 InternalFailure, request not applied.
    ServerError,
    /// HTTP 400 ThrottlingException, request not applied.
    Throttle,
    /// Connection closed before the request is applied.
    DropBefore,
    /// Request applied, then the connection closed: the answer is lost.
    DropAfter,
    /// Answer late.
    Delay(Duration),
    /// Answer a poll with the host's most recently acknowledged command
    /// again (a service that lost track): it must not run a second time.
    ReofferLast,
    /// Apply an acknowledgement but answer it without `CommandStatus`, as
    /// the models allow ("go on").
    AckWithoutStatus,
}

#[derive(Clone, Debug)]
pub struct Call {
    /// The commands API stack the call came on (`None`: the public API).
    pub stack: Option<model::Stack>,
    pub principal: String,
    pub operation: String,
    pub at: f64,
    pub status: u16,
    pub fault: Option<FaultKind>,
    pub user_agent: String,
}

/// Carry out the service-side events the state queued, each on a thread of
/// its own (they wait for drains and health checks); each one's end moves
/// its deployment on, which may queue more.
fn run_service_jobs(inner: &Arc<Inner>) {
    let (jobs, traffic) = {
        let mut s = inner.state.lock().unwrap();
        (std::mem::take(&mut s.service_jobs), s.traffic.clone())
    };
    let Some(traffic) = traffic else { return };
    for job in jobs {
        let (inner, traffic) = (inner.clone(), traffic.clone());
        std::thread::spawn(move || {
            let ok = traffic(&job.event, &job.name, &job.target_groups);
            inner.state.lock().unwrap().service_done(&job, ok);
            inner.wake.notify_waiters();
            run_service_jobs(&inner);
        });
    }
}

pub(crate) struct Inner {
    pub state: Mutex<State>,
    pub keys: Keyring,
    pub signer: SigningKey,
    rogue: SigningKey,
    wrong_subject: SigningKey,
    expired_chain: SigningKey,
    pub tamper: Mutex<Option<Tamper>>,
    /// A fault for no operation in particular hits the commands API only.
    faults: Faults<FaultKind>,
    pub calls: Mutex<Vec<Call>>,
    pub wake: tokio::sync::Notify,
    pub long_poll: Duration,
    /// Only this stack of the commands API answers (as one endpoint does).
    pub stack: Mutex<Option<model::Stack>>,
}

#[derive(Clone)]
pub struct ControlPlane {
    pub(crate) inner: Arc<Inner>,
    pub addr: SocketAddr,
}

pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

/// A required, non-empty string member of a request.
pub(crate) fn text<'a>(input: &'a Value, k: &str) -> Result<&'a str, ApiError> {
    input
        .get(k)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| api_error(400, "ValidationException", format!("{k} is required")))
}

pub fn api_error(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
    }
}

impl ControlPlane {
    /// A control plane whose signer chains to `ca`.
    pub fn start(ca: &Authority, keys: Keyring) -> ControlPlane {
        let rogue_ca = Authority::new("rogue CA");
        keys.add(
            OPERATOR_KEY,
            Secret {
                secret: OPERATOR_SECRET.into(),
                token: None,
                principal: "operator".into(),
            },
        );
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                region: REGION.into(),
                account: ACCOUNT.into(),
                ..State::default()
            }),
            keys,
            signer: ca.signer_for_region(REGION),
            rogue: rogue_ca.signer_for_region(REGION),
            wrong_subject: ca.signer_for_region("eu-west-1"),
            expired_chain: ca.signer_under_expired_intermediate(REGION),
            tamper: Mutex::new(None),
            faults: Faults::default(),
            calls: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            long_poll: Duration::from_secs(2),
            stack: Mutex::new(None),
        });
        let h = inner.clone();
        let addr = server::serve(Arc::new(move |req| {
            let h = h.clone();
            Box::pin(async move { handle(h, req).await })
        }));
        ControlPlane { inner, addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// BlockTraffic and AllowTraffic through `traffic` (the LB plane) for
    /// deployment groups with target groups, instead of instant no-ops.
    pub fn attach_traffic_control(&self, traffic: state::TrafficControl) {
        self.inner.state.lock().unwrap().traffic = Some(traffic);
    }

    /// Take Auto Scaling membership from `members` (the LB plane), for
    /// deployment groups made with `--auto-scaling-groups`.
    pub fn attach_auto_scaling(&self, members: state::AsgMembers) {
        self.inner.state.lock().unwrap().asg_members = Some(members);
    }

    /// An EC2 instance the control plane knows, with its tags. Returns the
    /// host identifier the agent will poll with.
    pub fn register_ec2(&self, instance_id: &str, tags: &[(&str, &str)]) -> String {
        let host = format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}");
        let mut s = self.inner.state.lock().unwrap();
        s.ec2.insert(
            instance_id.to_string(),
            state::Registered {
                host: host.clone(),
                tags: tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
        host
    }

    /// Serve only `stack` of the commands API (`None`: both), as the real
    /// `codedeploy-commands` and `codedeploy-commands-secure` endpoints do.
    pub fn require_stack(&self, stack: Option<model::Stack>) {
        *self.inner.stack.lock().unwrap() = stack;
    }

    pub fn set_tamper(&self, t: Option<Tamper>) {
        *self.inner.tamper.lock().unwrap() = t;
    }

    /// The token the "GitHub connection" hands to deployments.
    pub fn set_github_token(&self, token: Option<&str>) {
        self.inner.state.lock().unwrap().github_token = token.map(str::to_string);
    }

    /// New deployments start with a command named `name` (`None`: none).
    pub fn set_first_command(&self, name: Option<&str>) {
        self.inner.state.lock().unwrap().first_command = name.map(str::to_string);
    }

    pub fn set_reuse_archive_from(&self, deployment: Option<&str>) {
        self.inner.state.lock().unwrap().reuse_archive_from = deployment.map(str::to_string);
    }

    pub fn inject(&self, operation: Option<&str>, kind: FaultKind, times: u32) {
        self.inner.faults.inject(operation, kind, times);
    }

    pub fn faults_pending(&self) -> u32 {
        self.inner.faults.pending()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.inner.state.lock().unwrap())
    }

    /// Status of a deployment (`None` if unknown).
    pub fn deployment_status(&self, id: &str) -> Option<String> {
        self.with_state(|s| s.deployments.get(id).map(|d| d.status.to_string()))
    }

    /// Host commands of a deployment, in the order they were issued.
    pub fn commands_of(&self, deployment: &str) -> Vec<state::Command> {
        self.with_state(|s| {
            let mut v: Vec<state::Command> = s
                .commands
                .values()
                .filter(|c| c.deployment == deployment)
                .cloned()
                .collect();
            v.sort_by(|a, b| {
                a.acked
                    .partial_cmp(&b.acked)
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            v
        })
    }

    pub(crate) fn sign_spec(inner: &Inner, json: &str) -> (String, String) {
        match *inner.tamper.lock().unwrap() {
            None => ("PKCS7/JSON".into(), inner.signer.sign(json.as_bytes())),
            Some(Tamper::Content) => {
                let pem = inner.signer.sign(json.as_bytes());
                // The deployment group name is signed content; change it.
                (
                    "PKCS7/JSON".into(),
                    crate::signer::tamper_content(
                        &pem,
                        "\"ApplicationName\"",
                        "\"ApplicationNamf\"",
                    ),
                )
            }
            Some(Tamper::UntrustedSigner) => {
                ("PKCS7/JSON".into(), inner.rogue.sign(json.as_bytes()))
            }
            Some(Tamper::WrongSubject) => (
                "PKCS7/JSON".into(),
                inner.wrong_subject.sign(json.as_bytes()),
            ),
            Some(Tamper::Unsigned) => ("TEXT/JSON".into(), json.to_string()),
            Some(Tamper::ExpiredChain) => (
                "PKCS7/JSON".into(),
                inner.expired_chain.sign(json.as_bytes()),
            ),
        }
    }
}

async fn handle(inner: Arc<Inner>, req: Request<Bytes>) -> Reply {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ua = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (stack, op) = match model::Stack::of_target(&target) {
        Some((stack, op)) => (Some(stack), op.to_string()),
        None => match target.strip_prefix("CodeDeploy_20141006.") {
            Some(op) => (None, op.to_string()),
            None => {
                return Ok(json_response(
                    400,
                    &json!({"__type": "UnknownOperationException", "message": format!("unknown target {target:?}")}),
                ))
            }
        },
    };
    let commands_api = stack.is_some();
    let required = *inner.stack.lock().unwrap();
    if let (Some(s), Some(r)) = (stack, required) {
        if s != r {
            record(&inner, &ua, stack, "-", &op, 400, None);
            return Ok(json_response(
                400,
                &json!({"__type": "UnknownOperationException", "message": format!("this endpoint serves {}, not {target:?}", r.target_prefix())}),
            ));
        }
    }
    let service = stack.map_or("codedeploy", |s| s.signing_name());
    let principal = match sigv4::verify(&req, &inner.keys, REGION, service) {
        Ok(p) => p,
        Err(m) => {
            record(&inner, &ua, stack, "-", &op, 403, None);
            return Ok(json_response(
                403,
                &json!({"__type": "InvalidSignatureException", "message": m}),
            ));
        }
    };
    let input: Value = match serde_json::from_slice(req.body()) {
        Ok(v) => v,
        Err(e) => {
            record(&inner, &ua, stack, &principal, &op, 400, None);
            return Ok(json_response(
                400,
                &json!({"__type": "SerializationException", "message": e.to_string()}),
            ));
        }
    };
    if let Some(s) = stack {
        if let Err(m) = s.check(&op, &input) {
            record(&inner, &ua, stack, &principal, &op, 400, None);
            return Ok(json_response(
                400,
                &json!({"__type": "ClientException", "message": m}),
            ));
        }
    }
    let fault = inner.faults.take(|o| match o {
        Some(o) => o == op,
        None => commands_api,
    });
    match fault {
        Some(FaultKind::ServerError) => {
            record(&inner, &ua, stack, &principal, &op, 500, fault);
            return Ok(json_response(
                500,
                &json!({"__type": "InternalFailure", "message": "injected"}),
            ));
        }
        Some(FaultKind::Throttle) => {
            record(&inner, &ua, stack, &principal, &op, 400, fault);
            return Ok(json_response(
                400,
                &json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
            ));
        }
        Some(FaultKind::DropBefore) => {
            record(&inner, &ua, stack, &principal, &op, 0, fault);
            return Err(Dropped);
        }
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::ReofferLast) => {
            if let Some(c) = commands::last_acknowledged(&inner, &principal) {
                record(&inner, &ua, stack, &principal, &op, 200, fault);
                return Ok(json_response(200, &json!({ "HostCommand": c })));
            }
        }
        _ => {}
    }
    let result = if commands_api {
        commands::dispatch(&inner, &principal, &op, &input).await
    } else {
        public::dispatch(&inner, &op, &input)
    };
    run_service_jobs(&inner);
    let (status, body) = match result {
        Ok(mut v) => {
            if fault == Some(FaultKind::AckWithoutStatus) {
                if let Some(o) = v.as_object_mut() {
                    o.remove("CommandStatus");
                }
            }
            (200, v)
        }
        Err(e) => (e.status, json!({"__type": e.code, "message": e.message})),
    };
    record(&inner, &ua, stack, &principal, &op, status, fault);
    if fault == Some(FaultKind::DropAfter) {
        return Err(Dropped);
    }
    Ok(json_response(status, &body))
}

fn record(
    inner: &Inner,
    user_agent: &str,
    stack: Option<model::Stack>,
    principal: &str,
    op: &str,
    status: u16,
    fault: Option<FaultKind>,
) {
    inner.calls.lock().unwrap().push(Call {
        user_agent: user_agent.to_string(),
        stack,
        principal: principal.to_string(),
        operation: op.to_string(),
        at: state::now(),
        status,
        fault,
    });
}
