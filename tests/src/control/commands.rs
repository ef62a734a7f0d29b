//! The commands API (CodeDeployCommandService_v20141006) as the agent
//! sees it. A host may only see and answer its own commands.

use std::sync::Arc;

use serde_json::{json, Value};

use super::state::{now, Command, St, ALL_AGENT_EVENTS};
use super::{api_error, text, ApiError, ControlPlane, Inner};

pub(super) async fn dispatch(
    inner: &Arc<Inner>,
    principal: &str,
    op: &str,
    input: &Value,
) -> Result<Value, ApiError> {
    match op {
        "PollHostCommand" => {
            let host = text(input, "HostIdentifier")?.to_string();
            if principal != host {
                return Err(api_error(
                    400,
                    "AccessDeniedException",
                    format!("{principal} cannot poll for {host}"),
                ));
            }
            let deadline = tokio::time::Instant::now() + inner.long_poll;
            loop {
                let notified = inner.wake.notified();
                if let Some(c) = next_command(inner, &host) {
                    return Ok(json!({"HostCommand": c}));
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Ok(json!({}));
                }
            }
        }
        "PutHostCommandAcknowledgement" => {
            let id = text(input, "HostCommandIdentifier")?;
            let mut s = inner.state.lock().unwrap();
            let c = s
                .commands
                .get_mut(id)
                .ok_or_else(|| api_error(400, "InvalidCommandException", "no such host command"))?;
            if c.host != principal {
                return Err(api_error(400, "AccessDeniedException", "not your command"));
            }
            let status = match c.status {
                St::Pending => {
                    c.acked = Some(now());
                    c.status = St::InProgress;
                    "InProgress"
                }
                other => other.name(),
            };
            Ok(json!({"CommandStatus": status}))
        }
        "GetDeploymentSpecification" => {
            let exec = text(input, "DeploymentExecutionId")?;
            let host = text(input, "HostIdentifier")?;
            if principal != host {
                return Err(api_error(
                    400,
                    "AccessDeniedException",
                    "not your deployment",
                ));
            }
            let spec = {
                let s = inner.state.lock().unwrap();
                let dep_id = super::state::deployment_of_execution(exec);
                let d = s.deployments.get(dep_id).ok_or_else(|| {
                    api_error(400, "DeploymentDoesNotExistException", "no such deployment")
                })?;
                if !d.instances.iter().any(|i| i.host == host) {
                    return Err(api_error(
                        400,
                        "AccessDeniedException",
                        "host is not a target",
                    ));
                }
                spec_json(&s, d)
            };
            let (format, payload) = ControlPlane::sign_spec(inner, &spec);
            Ok(json!({
                "DeploymentSystem": "CodeDeploy",
                "DeploymentSpecification": {"GenericEnvelope": {"Format": format, "Payload": payload}},
            }))
        }
        "PutHostCommandComplete" => {
            let id = text(input, "HostCommandIdentifier")?;
            let status = text(input, "CommandStatus")?;
            let diag = input
                .get("Diagnostics")
                .and_then(|d| d.get("Payload"))
                .and_then(|p| p.as_str())
                .and_then(|p| serde_json::from_str::<Value>(p).ok());
            let mut s = inner.state.lock().unwrap();
            match s.commands.get(id) {
                Some(c) if c.host != principal => {
                    return Err(api_error(400, "AccessDeniedException", "not your command"))
                }
                None => {
                    return Err(api_error(
                        400,
                        "InvalidCommandException",
                        "no such host command",
                    ))
                }
                _ => {}
            }
            s.complete(id, status == "Succeeded", diag)
                .map_err(|m| api_error(400, "InvalidCommandException", m))?;
            drop(s);
            inner.wake.notify_waiters();
            Ok(json!({}))
        }
        "PostHostCommandUpdate" => {
            let id = text(input, "HostCommandIdentifier")?;
            let s = inner.state.lock().unwrap();
            let c = s
                .commands
                .get(id)
                .ok_or_else(|| api_error(400, "InvalidCommandException", "no such host command"))?;
            Ok(json!({"CommandStatus": c.status.name()}))
        }
        other => Err(api_error(
            400,
            "UnknownOperationException",
            format!("unknown operation {other}"),
        )),
    }
}

const OFFER_LEASE_SECS: f64 = 5.0;

/// A command as PollHostCommand returns it.
fn poll_answer(c: &Command) -> Value {
    json!({
        "HostCommandIdentifier": c.id,
        "HostIdentifier": c.host,
        "DeploymentExecutionId": c.execution_id,
        "CommandName": c.event,
        "Nonce": c.offered,
    })
}

/// The host's most recently acknowledged command, as a poll answer.
pub(super) fn last_acknowledged(inner: &Inner, host: &str) -> Option<Value> {
    let s = inner.state.lock().unwrap();
    let c = s
        .commands
        .values()
        .filter(|c| c.host == host && c.acked.is_some())
        .max_by(|a, b| {
            a.acked
                .partial_cmp(&b.acked)
                .unwrap_or(std::cmp::Ordering::Equal)
        })?;
    Some(poll_answer(c))
}

fn next_command(inner: &Inner, host: &str) -> Option<Value> {
    let mut s = inner.state.lock().unwrap();
    // An offered command is leased to the host for a while: it is offered
    // again only if no acknowledgement came (the answer to the poll may
    // have been lost), never twice in quick succession.
    let t = now();
    let c = s
        .commands
        .values_mut()
        .filter(|c| c.host == host && c.status == St::Pending && c.acked.is_none())
        .filter(|c| c.last_offered.is_none_or(|o| t - o > OFFER_LEASE_SECS))
        .min_by(|a, b| a.issued.total_cmp(&b.issued).then_with(|| a.id.cmp(&b.id)))?;
    c.offered += 1;
    c.last_offered = Some(t);
    Some(poll_answer(c))
}

fn spec_json(s: &super::State, d: &super::state::Deployment) -> String {
    let rev = &d.revision;
    let revision = match rev.get("revisionType").and_then(|t| t.as_str()) {
        Some("GitHub") => {
            let loc = &rev["gitHubLocation"];
            let repo = loc["repository"].as_str().unwrap_or("");
            let (account, name) = repo.split_once('/').unwrap_or(("", repo));
            json!({"RevisionType": "GitHub", "GitHubRevision": {
                "Account": account, "Repository": name, "CommitId": loc["commitId"],
            }})
        }
        _ => {
            let loc = &rev["s3Location"];
            let mut r = json!({"Bucket": loc["bucket"], "Key": loc["key"], "BundleType": loc["bundleType"]});
            if let Some(v) = loc.get("version") {
                r["Version"] = v.clone();
            }
            if let Some(e) = loc.get("eTag") {
                r["ETag"] = e.clone();
            }
            json!({"RevisionType": "S3", "S3Revision": r})
        }
    };
    let mut spec = json!({
        "DeploymentId": format!("arn:aws:codedeploy:{}:{}:deployment/{}", s.region, s.account, d.id),
        "DeploymentGroupId": d.group_id,
        "DeploymentGroupName": d.group_name,
        "ApplicationName": d.application,
        "DeploymentCreator": "user",
        "DeploymentType": "IN_PLACE",
        "AllPossibleLifecycleEvents": ALL_AGENT_EVENTS,
        "Revision": revision,
    });
    if let Some(f) = &d.file_exists_behavior {
        spec["AgentActionOverrides"] = json!({"AgentOverrides": {"FileExistsBehavior": f}});
    }
    if let Some(r) = &s.reuse_archive_from {
        spec["ReuseArchiveFromDeploymentId"] = json!(r);
    }
    if let Some(t) = &d.github_token {
        spec["GitHubAccessToken"] = json!(t);
    }
    spec.to_string()
}
