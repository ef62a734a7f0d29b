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
            Err(source) => Err(ImdsError::Http {
                path: path.into(),
                source,
            }),
        }
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
        })
    }
}
