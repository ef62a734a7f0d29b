//! The public CodeDeploy API subset the AWS CLI uses to drive deployments.

use std::sync::Arc;

use serde_json::{json, Value};

use super::state::{
    in_place_events, now, Deployment, EventState, Group, Instance, Registered, Rule, St,
};
use super::{api_error, text, ApiError, Inner};

fn tag_filters(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["Key"].as_str().unwrap_or("").to_string(),
                        f["Value"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The strings `pick` finds in each element of the list `v` (none when `v`
/// is not a list).
fn strings(v: &Value, pick: impl Fn(&Value) -> &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| pick(e).as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn dispatch(inner: &Arc<Inner>, op: &str, input: &Value) -> Result<Value, ApiError> {
    let mut s = inner.state.lock().unwrap();
    let out = match op {
        "CreateApplication" => {
            let name = text(input, "applicationName")?.to_string();
            if s.applications.contains_key(&name) {
                return Err(api_error(
                    400,
                    "ApplicationAlreadyExistsException",
                    format!("{name} already exists"),
                ));
            }
            let id = s.uuid();
            s.applications.insert(name, id.clone());
            json!({"applicationId": id})
        }
        "CreateDeploymentConfig" => {
            let name = text(input, "deploymentConfigName")?.to_string();
            let m = &input["minimumHealthyHosts"];
            let value = m["value"].as_u64().unwrap_or(0) as u32;
            let rule = match m["type"].as_str() {
                Some("HOST_COUNT") => Rule::HostCount(value),
                Some("FLEET_PERCENT") => Rule::FleetPercent(value),
                _ => {
                    return Err(api_error(
                        400,
                        "InvalidMinimumHealthyHostValueException",
                        "type must be HOST_COUNT or FLEET_PERCENT",
                    ))
                }
            };
            s.configs.insert(name, rule);
            json!({"deploymentConfigId": s.uuid()})
        }
        "CreateDeploymentGroup" => {
            let app = text(input, "applicationName")?.to_string();
            let name = text(input, "deploymentGroupName")?.to_string();
            text(input, "serviceRoleArn")?;
            if !s.applications.contains_key(&app) {
                return Err(api_error(
                    400,
                    "ApplicationDoesNotExistException",
                    format!("No application found for name: {app}"),
                ));
            }
            let config_name = input["deploymentConfigName"]
                .as_str()
                .unwrap_or("CodeDeployDefault.OneAtATime")
                .to_string();
            if s.rule(&config_name).is_none() {
                return Err(api_error(
                    400,
                    "DeploymentConfigDoesNotExistException",
                    format!("No deployment configuration found for name: {config_name}"),
                ));
            }
            let id = s.uuid();
            let g = Group {
                id: id.clone(),
                application: app.clone(),
                name: name.clone(),
                config_name,
                ec2_tags: tag_filters(input.get("ec2TagFilters")),
                onprem_tags: tag_filters(input.get("onPremisesInstanceTagFilters")),
                auto_scaling_groups: strings(&input["autoScalingGroups"], |v| v),
                with_lb: input.get("loadBalancerInfo").is_some_and(|v| !v.is_null()),
                target_groups: strings(&input["loadBalancerInfo"]["targetGroupInfoList"], |t| {
                    &t["name"]
                }),
            };
            s.groups.insert((app, name), g);
            json!({"deploymentGroupId": id})
        }
        // What `aws deploy push` calls after its upload to S3.
        "RegisterApplicationRevision" => {
            let app = text(input, "applicationName")?.to_string();
            if !s.applications.contains_key(&app) {
                return Err(api_error(
                    400,
                    "ApplicationDoesNotExistException",
                    format!("No application found for name: {app}"),
                ));
            }
            let rev = input["revision"].clone();
            if rev["revisionType"].as_str().is_none() {
                return Err(api_error(
                    400,
                    "RevisionRequiredException",
                    "Revision is required",
                ));
            }
            let description = input["description"].as_str().unwrap_or("").to_string();
            s.revisions.entry(app).or_default().push((rev, description));
            json!({})
        }
        "ListApplicationRevisions" => {
            let app = text(input, "applicationName")?;
            let revs: Vec<Value> = s
                .revisions
                .get(app)
                .map(|v| v.iter().map(|(r, _)| r.clone()).collect())
                .unwrap_or_default();
            json!({"revisions": revs})
        }
        "RegisterOnPremisesInstance" => {
            let name = text(input, "instanceName")?.to_string();
            let arn = input["iamUserArn"]
                .as_str()
                .or(input["iamSessionArn"].as_str())
                .ok_or_else(|| {
                    api_error(
                        400,
                        "IamArnRequiredException",
                        "iamUserArn or iamSessionArn is required",
                    )
                })?;
            s.onprem.insert(
                name,
                Registered {
                    host: arn.to_string(),
                    tags: Vec::new(),
                },
            );
            json!({})
        }
        "AddTagsToOnPremisesInstances" => {
            let tags = tag_filters(input.get("tags"));
            for n in input["instanceNames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let n = n.as_str().unwrap_or("");
                let r = s.onprem.get_mut(n).ok_or_else(|| {
                    api_error(
                        400,
                        "InstanceNotRegisteredException",
                        format!("{n} is not registered"),
                    )
                })?;
                r.tags.extend(tags.iter().cloned());
            }
            json!({})
        }
        "CreateDeployment" => {
            let app = text(input, "applicationName")?.to_string();
            let group_name = text(input, "deploymentGroupName")?.to_string();
            let g = s
                .groups
                .get(&(app.clone(), group_name.clone()))
                .cloned()
                .ok_or_else(|| {
                    api_error(
                        400,
                        "DeploymentGroupDoesNotExistException",
                        format!("No Deployment Group found for name: {group_name}"),
                    )
                })?;
            let revision = input.get("revision").cloned().ok_or_else(|| {
                api_error(400, "RevisionRequiredException", "revision is required")
            })?;
            let config_name = input["deploymentConfigName"]
                .as_str()
                .unwrap_or(&g.config_name)
                .to_string();
            let rule = s.rule(&config_name).ok_or_else(|| {
                api_error(
                    400,
                    "DeploymentConfigDoesNotExistException",
                    config_name.clone(),
                )
            })?;
            let id = format!("d-{}", s.next_id(9));
            let mut events: Vec<String> = in_place_events(g.with_lb)
                .into_iter()
                .map(str::to_string)
                .collect();
            if let Some(first) = &s.first_command {
                events.insert(0, first.clone());
            }
            let instances: Vec<Instance> = s
                .targets(&g)
                .into_iter()
                .map(|(name, host)| Instance {
                    name,
                    host,
                    status: St::Pending,
                    events: events
                        .iter()
                        .map(|e| EventState {
                            name: e.clone(),
                            status: St::Pending,
                            start: None,
                            end: None,
                            diagnostics: None,
                        })
                        .collect(),
                    current: 0,
                    command: None,
                    updated: now(),
                })
                .collect();
            let github_token = if revision["revisionType"] == "GitHub" {
                s.github_token.clone()
            } else {
                None
            };
            let mut d = Deployment {
                id: id.clone(),
                application: app,
                group_name,
                group_id: g.id.clone(),
                config_name,
                rule,
                revision,
                status: "Created",
                error: None,
                created: now(),
                completed: None,
                instances,
                file_exists_behavior: input["fileExistsBehavior"].as_str().map(str::to_string),
                ignore_application_stop_failures: input["ignoreApplicationStopFailures"]
                    .as_bool()
                    .unwrap_or(false),
                github_token,
                with_lb: g.with_lb,
                target_groups: g.target_groups.clone(),
            };
            if d.instances.is_empty() {
                d.status = "Failed";
                d.completed = Some(now());
                d.error = Some(("NO_INSTANCES".into(), "The deployment failed because no instances were found for your deployment group.".into()));
            }
            s.deployments.insert(id.clone(), d);
            s.advance(&id);
            inner.wake.notify_waiters();
            json!({"deploymentId": id})
        }
        "GetDeployment" => {
            let id = text(input, "deploymentId")?;
            let d = s.deployments.get(id).ok_or_else(|| no_deployment(id))?;
            json!({"deploymentInfo": deployment_info(d)})
        }
        "StopDeployment" => {
            let id = text(input, "deploymentId")?.to_string();
            s.stop(&id)
                .map_err(|m| api_error(400, "DeploymentAlreadyCompletedException", m))?;
            inner.wake.notify_waiters();
            json!({"status": "Succeeded", "statusMessage": "Deployment stopped"})
        }
        "ListDeploymentInstances" => {
            let id = text(input, "deploymentId")?;
            let d = s.deployments.get(id).ok_or_else(|| no_deployment(id))?;
            json!({"instancesList": d.instances.iter().map(|i| i.name.clone()).collect::<Vec<_>>()})
        }
        "ListDeploymentTargets" => {
            let id = text(input, "deploymentId")?;
            let d = s.deployments.get(id).ok_or_else(|| no_deployment(id))?;
            json!({"targetIds": d.instances.iter().map(|i| i.name.clone()).collect::<Vec<_>>()})
        }
        "GetDeploymentInstance" => {
            let id = text(input, "deploymentId")?;
            let iid = text(input, "instanceId")?;
            let d = s.deployments.get(id).ok_or_else(|| no_deployment(id))?;
            let i = d.instances.iter().find(|i| i.name == iid).ok_or_else(|| {
                api_error(
                    400,
                    "InstanceDoesNotExistException",
                    format!("{iid} is not part of {id}"),
                )
            })?;
            json!({"instanceSummary": {
                "deploymentId": d.id,
                "instanceId": i.name,
                "status": i.status.name(),
                "lastUpdatedAt": i.updated,
                "lifecycleEvents": lifecycle(i),
                "instanceType": "Blue",
            }})
        }
        "GetDeploymentTarget" => {
            let id = text(input, "deploymentId")?;
            let tid = text(input, "targetId")?;
            let d = s.deployments.get(id).ok_or_else(|| no_deployment(id))?;
            let i = d.instances.iter().find(|i| i.name == tid).ok_or_else(|| {
                api_error(
                    400,
                    "DeploymentTargetDoesNotExistException",
                    tid.to_string(),
                )
            })?;
            json!({"deploymentTarget": target(d, i)})
        }
        "BatchGetDeploymentTargets" => {
            let id = text(input, "deploymentId")?;
            let d = s.deployments.get(id).ok_or_else(|| no_deployment(id))?;
            let ids: Vec<String> = input["targetIds"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let targets: Vec<Value> = d
                .instances
                .iter()
                .filter(|i| ids.contains(&i.name))
                .map(|i| target(d, i))
                .collect();
            json!({"deploymentTargets": targets})
        }
        "ListDeployments" => {
            let ids: Vec<&String> = s.deployments.keys().collect();
            json!({"deployments": ids})
        }
        other => {
            return Err(api_error(
                400,
                "UnknownOperationException",
                format!("the testbed does not implement {other}"),
            ))
        }
    };
    Ok(out)
}

fn no_deployment(id: &str) -> ApiError {
    api_error(
        400,
        "DeploymentDoesNotExistException",
        format!("The deployment {id} could not be found"),
    )
}

fn lifecycle(i: &Instance) -> Vec<Value> {
    i.events
        .iter()
        .map(|e| {
            let mut v = json!({"lifecycleEventName": e.name, "status": e.status.name()});
            if let Some(t) = e.start {
                v["startTime"] = json!(t);
            }
            if let Some(t) = e.end {
                v["endTime"] = json!(t);
            }
            if let Some(d) = &e.diagnostics {
                v["diagnostics"] = d.clone();
            }
            v
        })
        .collect()
}

fn target(d: &Deployment, i: &Instance) -> Value {
    json!({"deploymentTargetType": "InstanceTarget", "instanceTarget": {
        "deploymentId": d.id,
        "targetId": i.name,
        "targetArn": i.host,
        "status": i.status.name(),
        "lastUpdatedAt": i.updated,
        "lifecycleEvents": lifecycle(i),
    }})
}

fn deployment_info(d: &Deployment) -> Value {
    let mut v = json!({
        "applicationName": d.application,
        "deploymentGroupName": d.group_name,
        "deploymentConfigName": d.config_name,
        "deploymentId": d.id,
        "revision": d.revision,
        "status": d.status,
        "createTime": d.created,
        "creator": "user",
        "deploymentOverview": {
            "Pending": d.count(St::Pending),
            "InProgress": d.count(St::InProgress),
            "Succeeded": d.count(St::Succeeded),
            "Failed": d.count(St::Failed),
            "Skipped": d.count(St::Skipped),
            "Ready": 0,
        },
        "deploymentStyle": {"deploymentType": "IN_PLACE", "deploymentOption": if d.with_lb { "WITH_TRAFFIC_CONTROL" } else { "WITHOUT_TRAFFIC_CONTROL" }},
        "computePlatform": "Server",
    });
    if let Some(t) = d.completed {
        v["completeTime"] = json!(t);
    }
    if let Some((code, message)) = &d.error {
        v["errorInformation"] = json!({"code": code, "message": message});
    }
    if let Some(f) = &d.file_exists_behavior {
        v["fileExistsBehavior"] = json!(f);
    }
    v["ignoreApplicationStopFailures"] = json!(d.ignore_application_stop_failures);
    v
}
