//! Commands API requests checked against the official service models
//! (docs/testbed.md, "The commands API"): the stack is told by the target
//! prefix and must be signed with that stack's signing name; the operation
//! must exist; every member must be one the model has, of its type, within
//! its length, enum and pattern; required members must be there. What the
//! model refuses is answered as the service answers it: HTTP 400 with a
//! `ClientException`, the model's only client error.

use serde_json::Value;

use crate::oracle;

/// The two stacks of the commands API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// `CodeDeployCommand.api.json`: `codedeploy-commands`.
    Plain,
    /// `CodeDeployCommandSecure.api.json`: `codedeploy-commands-secure`.
    Secure,
}

impl Stack {
    fn file(self) -> &'static str {
        match self {
            Stack::Plain => "CodeDeployCommand.api.json",
            Stack::Secure => "CodeDeployCommandSecure.api.json",
        }
    }

    fn model(self) -> &'static Value {
        oracle::service_model(self.file())
    }

    fn meta(self, key: &str) -> &'static str {
        self.model()["metadata"][key].as_str().unwrap_or("")
    }

    pub fn target_prefix(self) -> &'static str {
        self.meta("targetPrefix")
    }

    /// The SigV4 signing name: the model's `signingName`, else its
    /// `endpointPrefix` (botocore's rule).
    pub fn signing_name(self) -> &'static str {
        match self.meta("signingName") {
            "" => self.meta("endpointPrefix"),
            s => s,
        }
    }

    /// The stack and operation an `X-Amz-Target` names.
    pub fn of_target(target: &str) -> Option<(Stack, &str)> {
        [Stack::Plain, Stack::Secure].into_iter().find_map(|s| {
            let op = target.strip_prefix(s.target_prefix())?.strip_prefix('.')?;
            Some((s, op))
        })
    }

    /// Check one request's input against the operation's input shape.
    pub fn check(self, op: &str, input: &Value) -> Result<(), String> {
        let m = self.model();
        let Some(shape) = m["operations"][op]["input"]["shape"].as_str() else {
            return Err(format!("{op} is not an operation of {}", self.file()));
        };
        check_shape(&m["shapes"], shape, input, op)
    }
}

fn check_shape(shapes: &Value, name: &str, v: &Value, at: &str) -> Result<(), String> {
    let s = &shapes[name];
    match s["type"].as_str().unwrap_or("") {
        "structure" => {
            let obj = v
                .as_object()
                .ok_or_else(|| format!("{at}: expected a structure"))?;
            let members = &s["members"];
            for (k, val) in obj {
                let Some(m) = members.get(k) else {
                    return Err(format!("{at}: {k} is not a member of {name}"));
                };
                if !val.is_null() {
                    let shape = m["shape"].as_str().unwrap_or("");
                    check_shape(shapes, shape, val, &format!("{at}.{k}"))?;
                }
            }
            for r in s["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or("");
                if obj.get(r).is_none_or(Value::is_null) {
                    return Err(format!("{at}: {r} is required"));
                }
            }
            Ok(())
        }
        "string" => check_string(s, v, at),
        "long" | "integer" => match v.as_i64() {
            Some(_) => Ok(()),
            None => Err(format!("{at}: expected an integer")),
        },
        "timestamp" => match v.is_number() || v.is_string() {
            true => Ok(()),
            false => Err(format!("{at}: expected a timestamp")),
        },
        "boolean" => match v.is_boolean() {
            true => Ok(()),
            false => Err(format!("{at}: expected a boolean")),
        },
        other => Err(format!(
            "{at}: shape {name} of type {other:?} is not checked"
        )),
    }
}

fn check_string(s: &Value, v: &Value, at: &str) -> Result<(), String> {
    let text = v
        .as_str()
        .ok_or_else(|| format!("{at}: expected a string"))?;
    let n = text.chars().count() as u64;
    if let Some(min) = s["min"].as_u64().filter(|m| n < *m) {
        return Err(format!("{at}: length {n} is below the minimum {min}"));
    }
    if let Some(max) = s["max"].as_u64().filter(|m| n > *m) {
        return Err(format!("{at}: length {n} is above the maximum {max}"));
    }
    if let Some(e) = s["enum"].as_array() {
        if !e.iter().any(|x| x.as_str() == Some(text)) {
            return Err(format!("{at}: {text:?} is not one of {e:?}"));
        }
    }
    if let Some(p) = s["pattern"].as_str() {
        let re = regex_lite::Regex::new(p).map_err(|e| format!("{at}: pattern {p}: {e}"))?;
        if !re.is_match(text) {
            return Err(format!("{at}: {text:?} does not match {p}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_stacks_come_from_the_models() {
        assert_eq!(
            (Stack::Plain.target_prefix(), Stack::Plain.signing_name()),
            ("CodeDeployCommandService_v20141006", "codedeploy-commands")
        );
        assert_eq!(
            (Stack::Secure.target_prefix(), Stack::Secure.signing_name()),
            ("CodeDeployCommandService", "codedeploy-commands-secure")
        );
        assert_eq!(
            Stack::of_target("CodeDeployCommandService.PollHostCommand"),
            Some((Stack::Secure, "PollHostCommand"))
        );
        assert_eq!(
            Stack::of_target("CodeDeployCommandService_v20141006.PollHostCommand"),
            Some((Stack::Plain, "PollHostCommand"))
        );
    }

    #[test]
    fn requests_are_held_to_the_model() {
        let s = Stack::Plain;
        let ack = |extra: Value| {
            let mut v = json!({"HostCommandIdentifier": "x", "Diagnostics": {"Format": "JSON", "Payload": "{}"}});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s.check("PutHostCommandAcknowledgement", &v)
        };
        assert!(ack(json!({})).is_ok());
        assert!(ack(json!({"HostCommandMaxDurationInSeconds": 60}))
            .unwrap_err()
            .contains("not a member"));
        assert!(s
            .check(
                "PutHostCommandComplete",
                &json!({"HostCommandIdentifier": "x", "CommandStatus": "Done"})
            )
            .unwrap_err()
            .contains("not one of"));
        assert!(s
            .check(
                "PutHostCommandComplete",
                &json!({"HostCommandIdentifier": "x"})
            )
            .unwrap_err()
            .contains("CommandStatus is required"));
        let payload = "p".repeat(8193);
        assert!(s
            .check(
                "PutHostCommandComplete",
                &json!({"HostCommandIdentifier": "x", "CommandStatus": "Failed", "Diagnostics": {"Format": "JSON", "Payload": payload}})
            )
            .unwrap_err()
            .contains("above the maximum 8192"));
        assert!(s
            .check(
                "GetDeploymentSpecification",
                &json!({"DeploymentExecutionId": "a/b", "HostIdentifier": "h"})
            )
            .unwrap_err()
            .contains("does not match"));
        assert!(s.check("UpdateHostCommand", &json!({})).is_err());
    }
}
