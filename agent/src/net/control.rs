//! The CodeDeploy commands API (private, JSON 1.1) that every host polls.
//! Two stacks serve it, with the same operations and shapes but their own
//! target prefix and SigV4 signing name (the official agent's service
//! models, `CodeDeployCommand.api.json` and `CodeDeployCommandSecure.api.json`);
//! `:enable_auth_policy:` selects the secure one. Only members those models
//! define are sent.

use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{Method, Request};
use serde_json::{json, Value};

use super::http::{HttpClient, HttpError};

/// Which commands API stack the host talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// API version 2014-10-06, endpoint `codedeploy-commands`.
    Plain,
    /// API version 2019-11-11, endpoint `codedeploy-commands-secure`: the
    /// service checks the host's own IAM permissions
    /// (`codedeploy-commands-secure:*`).
    Secure,
}

impl Stack {
    pub fn for_auth_policy(enable_auth_policy: bool) -> Stack {
        if enable_auth_policy {
            Stack::Secure
        } else {
            Stack::Plain
        }
    }

    pub fn target_prefix(self) -> &'static str {
        match self {
            Stack::Plain => "CodeDeployCommandService_v20141006",
            Stack::Secure => "CodeDeployCommandService",
        }
    }

    pub fn signing_name(self) -> &'static str {
        match self {
            Stack::Plain => "codedeploy-commands",
            Stack::Secure => "codedeploy-commands-secure",
        }
    }
}

/// A command's status in the acknowledgement's answer. The models make the
/// member optional and say an answer without it means "go on"; the official
/// agents skip the command only for `Succeeded` and `Failed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckStatus {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    /// The answer carried no status.
    Unstated,
    /// A value the models do not list; treated as "go on", as officially.
    Other(String),
}

impl AckStatus {
    pub fn parse(v: Option<&str>) -> AckStatus {
        match v {
            None | Some("") => AckStatus::Unstated,
            Some("Pending") => AckStatus::Pending,
            Some("InProgress") => AckStatus::InProgress,
            Some("Succeeded") => AckStatus::Succeeded,
            Some("Failed") => AckStatus::Failed,
            Some(o) => AckStatus::Other(o.to_string()),
        }
    }

    /// Run the command?
    pub fn proceed(&self) -> bool {
        !matches!(self, AckStatus::Succeeded | AckStatus::Failed)
    }
}

impl std::fmt::Display for AckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AckStatus::Pending => "Pending",
            AckStatus::InProgress => "InProgress",
            AckStatus::Succeeded => "Succeeded",
            AckStatus::Failed => "Failed",
            AckStatus::Unstated => "(none)",
            AckStatus::Other(o) => o,
        })
    }
}
/// Name and version once; the version header carries the agent's version.
const USER_AGENT: &str = concat!("codedeploy-agent-rs/", env!("CARGO_PKG_VERSION"));
/// The service's own limit on an envelope payload.
pub const MAX_PAYLOAD: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{operation}: {source}")]
    Transport {
        operation: &'static str,
        source: HttpError,
    },
    #[error("{operation}: HTTP {status} {code}: {message}")]
    Service {
        operation: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{operation}: cannot sign the request: {message}")]
    Signing {
        operation: &'static str,
        message: String,
    },
    #[error("{operation}: unexpected answer: {message}")]
    Decode {
        operation: &'static str,
        message: String,
    },
}

impl ControlError {
    /// Worth trying again: throttling, server errors, the network.
    pub fn retryable(&self) -> bool {
        match self {
            ControlError::Transport { .. } => true,
            ControlError::Service { status, code, .. } => {
                *status >= 500 || *status == 429 || is_throttling(code)
            }
            ControlError::Signing { .. } | ControlError::Decode { .. } => false,
        }
    }

    pub fn throttled(&self) -> bool {
        matches!(self, ControlError::Service { status, code, .. } if *status == 429 || is_throttling(code))
    }
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "SlowDown"
            | "RequestThrottled"
    )
}

/// A host command as PollHostCommand returns it (the wire record; the
/// command itself is parsed into `command::HostCommand`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolledCommand {
    pub host_command_identifier: String,
    pub host_identifier: String,
    pub deployment_execution_id: String,
    pub command_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub format: String,
    pub payload: String,
}

pub struct CommandsClient {
    http: HttpClient,
    stack: Stack,
    endpoint: String,
    host_header: String,
    region: String,
    credentials: SharedCredentialsProvider,
    agent_version: String,
}

impl CommandsClient {
    pub fn new(
        http: HttpClient,
        stack: Stack,
        endpoint: &str,
        region: &str,
        credentials: SharedCredentialsProvider,
        agent_version: &str,
    ) -> Result<CommandsClient, String> {
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("endpoint {endpoint:?}: {e}"))?;
        let host_header = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| format!("endpoint {endpoint:?} has no host"))?;
        Ok(CommandsClient {
            http,
            stack,
            endpoint: format!("{}/", endpoint.trim_end_matches('/')),
            host_header,
            region: region.to_string(),
            credentials,
            agent_version: agent_version.to_string(),
        })
    }

    async fn call(&self, operation: &'static str, input: Value) -> Result<Value, ControlError> {
        let body = Bytes::from(input.to_string());
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&self.endpoint)
            .header("host", &self.host_header)
            .header("content-type", "application/x-amz-json-1.1")
            .header(
                "x-amz-target",
                format!("{}.{operation}", self.stack.target_prefix()),
            )
            .header("x-amz-codedeploy-agent-version", &self.agent_version)
            .header("user-agent", USER_AGENT)
            .body(body.clone())
            .map_err(|e| ControlError::Signing {
                operation,
                message: e.to_string(),
            })?;
        self.sign(&mut req, &body)
            .await
            .map_err(|message| ControlError::Signing { operation, message })?;
        let resp = self
            .http
            .send(req, 1 << 20)
            .await
            .map_err(|source| ControlError::Transport { operation, source })?;
        let status = resp.status().as_u16();
        let text = String::from_utf8_lossy(resp.body()).to_string();
        if !(200..300).contains(&status) {
            let (code, message) = service_error(&text, resp.headers());
            return Err(ControlError::Service {
                operation,
                status,
                code,
                message,
            });
        }
        if text.trim().is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_str(&text).map_err(|e| ControlError::Decode {
            operation,
            message: e.to_string(),
        })
    }

    async fn sign(&self, req: &mut Request<Bytes>, body: &[u8]) -> Result<(), String> {
        let creds = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| super::http::chain(&e))?;
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.stack.signing_name())
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let uri = req.uri().to_string();
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
            .collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            &uri,
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }

    pub async fn poll(&self, host_identifier: &str) -> Result<Option<PolledCommand>, ControlError> {
        const OP: &str = "PollHostCommand";
        let out = self
            .call(OP, json!({ "HostIdentifier": host_identifier }))
            .await?;
        let Some(c) = out.get("HostCommand").filter(|c| !c.is_null()) else {
            return Ok(None);
        };
        let field = |k: &str| {
            c.get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| ControlError::Decode {
                    operation: OP,
                    message: format!("HostCommand.{k} is missing"),
                })
        };
        Ok(Some(PolledCommand {
            host_command_identifier: field("HostCommandIdentifier")?,
            host_identifier: field("HostIdentifier")?,
            deployment_execution_id: field("DeploymentExecutionId")?,
            command_name: field("CommandName")?,
        }))
    }

    /// Returns the command's status as the service sees it. Only the
    /// models' members are sent: no maximum duration (neither model has
    /// one, and neither official agent sends it).
    pub async fn acknowledge(
        &self,
        host_command_identifier: &str,
        is_noop: bool,
    ) -> Result<AckStatus, ControlError> {
        let input = json!({
            "HostCommandIdentifier": host_command_identifier,
            "Diagnostics": { "Format": "JSON", "Payload": json!({ "IsCommandNoop": is_noop }).to_string() },
        });
        let out = self.call("PutHostCommandAcknowledgement", input).await?;
        Ok(AckStatus::parse(
            out.get("CommandStatus").and_then(|s| s.as_str()),
        ))
    }

    pub async fn specification(
        &self,
        deployment_execution_id: &str,
        host_identifier: &str,
    ) -> Result<Envelope, ControlError> {
        const OP: &str = "GetDeploymentSpecification";
        let out = self
            .call(OP, json!({ "DeploymentExecutionId": deployment_execution_id, "HostIdentifier": host_identifier }))
            .await?;
        let system = out
            .get("DeploymentSystem")
            .and_then(|s| s.as_str())
            .unwrap_or("");
        if system != "CodeDeploy" {
            return Err(ControlError::Decode {
                operation: OP,
                message: format!("DeploymentSystem is {system:?}, not \"CodeDeploy\""),
            });
        }
        let env = out
            .get("DeploymentSpecification")
            .and_then(|s| s.get("GenericEnvelope"))
            .ok_or_else(|| ControlError::Decode {
                operation: OP,
                message: "DeploymentSpecification.GenericEnvelope is missing".into(),
            })?;
        let s = |k: &str| {
            env.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        Ok(Envelope {
            format: s("Format"),
            payload: s("Payload"),
        })
    }

    pub async fn complete(
        &self,
        host_command_identifier: &str,
        succeeded: bool,
        diagnostics_json: &str,
    ) -> Result<(), ControlError> {
        self.call(
            "PutHostCommandComplete",
            json!({
                "HostCommandIdentifier": host_command_identifier,
                "CommandStatus": if succeeded { "Succeeded" } else { "Failed" },
                "Diagnostics": { "Format": "JSON", "Payload": diagnostics_json },
            }),
        )
        .await
        .map(|_| ())
    }
}

fn service_error(body: &str, headers: &http::HeaderMap) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let raw = v
        .get("__type")
        .and_then(|t| t.as_str())
        .or_else(|| {
            headers
                .get("x-amzn-errortype")
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("Unknown");
    // "com.amazon...#ThrottlingException:http://..." -> ThrottlingException
    let code = raw
        .rsplit('#')
        .next()
        .unwrap_or(raw)
        .split(':')
        .next()
        .unwrap_or(raw)
        .to_string();
    let message = v
        .get("message")
        .or_else(|| v.get("Message"))
        .and_then(|m| m.as_str())
        .unwrap_or(body)
        .chars()
        .take(500)
        .collect();
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_have_their_own_target_and_signing_name() {
        let s = Stack::for_auth_policy(true);
        assert_eq!(
            (s.target_prefix(), s.signing_name()),
            ("CodeDeployCommandService", "codedeploy-commands-secure")
        );
        let p = Stack::for_auth_policy(false);
        assert_eq!(
            (p.target_prefix(), p.signing_name()),
            ("CodeDeployCommandService_v20141006", "codedeploy-commands")
        );
    }

    #[test]
    fn an_unstated_status_means_go_on() {
        assert!(AckStatus::parse(None).proceed());
        assert!(AckStatus::parse(Some("InProgress")).proceed());
        assert!(AckStatus::parse(Some("Pending")).proceed());
        assert!(!AckStatus::parse(Some("Succeeded")).proceed());
        assert!(!AckStatus::parse(Some("Failed")).proceed());
    }

    #[test]
    fn error_codes_and_retry_classes() {
        let (c, m) = service_error(
            r#"{"__type":"com.amazon.x#ThrottlingException","message":"slow down"}"#,
            &http::HeaderMap::new(),
        );
        assert_eq!(
            (c.as_str(), m.as_str()),
            ("ThrottlingException", "slow down")
        );
        let e = ControlError::Service {
            operation: "X",
            status: 400,
            code: c,
            message: m,
        };
        assert!(e.retryable() && e.throttled());
        let e = ControlError::Service {
            operation: "X",
            status: 400,
            code: "AccessDeniedException".into(),
            message: String::new(),
        };
        assert!(!e.retryable());
        let e = ControlError::Service {
            operation: "X",
            status: 503,
            code: "Unknown".into(),
            message: String::new(),
        };
        assert!(e.retryable() && !e.throttled());
    }
}
