//! The EC2 instance metadata service, for the host's identity: IMDSv2
//! (session token first), IMDSv1 only when the token call is refused and
//! `:disable_imds_v1:` is off (Ruby `instance_metadata.rb`).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};

use super::http::{HttpClient, HttpError};

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("instance metadata {path}: {source}")]
    Http { path: String, source: HttpError },
    #[error("instance metadata {path}: HTTP {status}")]
    Status { path: String, status: u16 },
    #[error(
        "instance metadata token refused (HTTP {0}) and IMDSv1 is disabled by :disable_imds_v1:"
    )]
    V1Disabled(u16),
    #[error("instance identity document: {0}")]
    Document(String),
}

#[derive(Debug)]
pub struct Imds {
    http: HttpClient,
    endpoint: String,
    allow_v1: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceIdentity {
    pub instance_id: String,
    pub region: String,
    pub account: String,
    /// Where load balancers reach the instance (`privateIp`).
    pub private_ip: Option<String>,
}

/// The instance profile credentials document.
pub fn parse_role_credentials(doc: &str) -> Result<aws_credential_types::Credentials, String> {
    let v: serde_json::Value = serde_json::from_str(doc).map_err(|e| e.to_string())?;
    let f = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    if f("Code").is_some_and(|c| c != "Success") {
        return Err(format!(
            "instance profile credentials: Code {}",
            f("Code").unwrap_or_default()
        ));
    }
    let expiry = f("Expiration")
        .map(|e| {
            chrono::DateTime::parse_from_rfc3339(&e)
                .map(std::time::SystemTime::from)
                .map_err(|err| format!("Expiration {e:?}: {err}"))
        })
        .transpose()?;
    Ok(aws_credential_types::Credentials::new(
        f("AccessKeyId").ok_or("AccessKeyId is missing")?,
        f("SecretAccessKey").ok_or("SecretAccessKey is missing")?,
        f("Token"),
        expiry,
        "instance-profile-imds",
    ))
}

impl Imds {
    pub fn new(endpoint: &str, allow_v1: bool) -> Result<Imds, HttpError> {
        // Metadata is link-local: never through the proxy, short deadline.
        Ok(Imds {
            http: HttpClient::new(None, Duration::from_secs(5))?,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            allow_v1,
        })
    }

    async fn token(&self) -> Result<Option<String>, ImdsError> {
        let path = "/latest/api/token";
        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!("{}{path}", self.endpoint))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            .body(Bytes::new())
            .expect("static request");
        let resp = self.http.send(req, 4096).await;
        match resp {
            Ok(r) if r.status().is_success() => {
                Ok(Some(String::from_utf8_lossy(r.body()).trim().to_string()))
            }
            // 403: IMDS disabled for tokens; 404/405: an old endpoint.
            Ok(r) if self.allow_v1 && matches!(r.status().as_u16(), 403..=405) => Ok(None),
            Ok(r) if !self.allow_v1 => Err(ImdsError::V1Disabled(r.status().as_u16())),
            Ok(r) => Err(ImdsError::Status {
                path: path.into(),
                status: r.status().as_u16(),
            }),
            // A PUT that never arrives (a container behind a hop limit of 1)
            // is the usual reason to fall back, as the Ruby agent does.
            Err(_) if self.allow_v1 => Ok(None),
            Err(source) => Err(ImdsError::Http {
                path: path.into(),
                source,
            }),
        }
    }

    /// The instance profile's credentials, IMDSv2 or (when allowed) v1.
    pub async fn role_credentials(&self) -> Result<aws_credential_types::Credentials, ImdsError> {
        let token = self.token().await?;
        let t = token.as_deref();
        let base = "/latest/meta-data/iam/security-credentials/";
        let role = self.get(base, t).await?;
        let role = role.lines().next().unwrap_or("").trim().to_string();
        if role.is_empty() {
            return Err(ImdsError::Document(
                "no instance profile is attached".into(),
            ));
        }
        let doc = self.get(&format!("{base}{role}"), t).await?;
        parse_role_credentials(&doc).map_err(ImdsError::Document)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Result<String, ImdsError> {
        let mut b = Request::builder().uri(format!("{}{path}", self.endpoint));
        if let Some(t) = token {
            b = b.header("x-aws-ec2-metadata-token", t);
        }
        let req = b.body(Bytes::new()).expect("static request");
        let r = self
            .http
            .send(req, 64 * 1024)
            .await
            .map_err(|source| ImdsError::Http {
                path: path.into(),
                source,
            })?;
        if !r.status().is_success() {
            return Err(ImdsError::Status {
                path: path.into(),
                status: r.status().as_u16(),
            });
        }
        Ok(String::from_utf8_lossy(r.body()).trim().to_string())
    }

    pub async fn identity(&self) -> Result<InstanceIdentity, ImdsError> {
        let token = self.token().await?;
        let t = token.as_deref();
        let instance_id = self.get("/latest/meta-data/instance-id", t).await?;
        let doc = self
            .get("/latest/dynamic/instance-identity/document", t)
            .await?;
        let v: serde_json::Value =
            serde_json::from_str(&doc).map_err(|e| ImdsError::Document(e.to_string()))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| ImdsError::Document(format!("{k} is missing")))
        };
        Ok(InstanceIdentity {
            instance_id,
            region: field("region")?,
            account: field("accountId")?,
            private_ip: field("privateIp").ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_credentials_document() {
        let c = parse_role_credentials(r#"{"Code":"Success","AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2026-11-23T18:00:00Z"}"#).unwrap();
        assert_eq!(c.access_key_id(), "ASIA1");
        assert_eq!(c.session_token(), Some("t"));
        let exp = c
            .expiry()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(exp, 1_795_456_800);
        assert!(parse_role_credentials(r#"{"Code":"AssumeRoleUnauthorizedAccess"}"#).is_err());
    }
}
