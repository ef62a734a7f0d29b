//! Who this host is and how it signs: an EC2 instance (identity from IMDS,
//! credentials from the standard AWS chain) or an on-premises instance
//! (`codedeploy.onpremises.yml`: an IAM user's keys, or an IAM session whose
//! credentials file another process keeps fresh).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use appspec::yaml;
use aws_credential_types::provider::{self, future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::config::Config;
use crate::net::endpoint;
use crate::net::imds::{Imds, ImdsError};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {message}")]
    OnPremises { path: PathBuf, message: String },
    #[error(transparent)]
    Imds(#[from] ImdsError),
    #[error("{0}")]
    Other(String),
}

#[derive(Clone, Debug)]
pub struct HostIdentity {
    pub host_identifier: String,
    pub region: String,
    pub credentials: SharedCredentialsProvider,
    /// `ec2` or `on-premises`, for the log.
    pub kind: &'static str,
    /// EC2 only: instance id and private address, for load balancers.
    pub instance: Option<(String, String)>,
}

/// The on-premises file (keys without colons, unlike the agent config).
#[derive(Debug, PartialEq, Eq)]
pub struct OnPremises {
    pub region: String,
    pub host_identifier: String,
    pub auth: OnPremisesAuth,
}

#[derive(PartialEq, Eq)]
pub enum OnPremisesAuth {
    User {
        access_key_id: String,
        secret_access_key: String,
    },
    Session {
        credentials_file: PathBuf,
    },
}

impl std::fmt::Debug for OnPremisesAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OnPremisesAuth::User { access_key_id, .. } => {
                write!(
                    f,
                    "User {{ access_key_id: {access_key_id:?}, secret: REDACTED }}"
                )
            }
            OnPremisesAuth::Session { credentials_file } => {
                write!(f, "Session {{ credentials_file: {credentials_file:?} }}")
            }
        }
    }
}

impl OnPremises {
    pub fn parse(text: &str, path: &Path) -> Result<OnPremises, IdentityError> {
        let err = |message: String| IdentityError::OnPremises {
            path: path.into(),
            message,
        };
        let root = yaml::parse(text)
            .map_err(|e| {
                err(format!(
                    "line {}: not valid YAML: {}",
                    e.pos.line, e.message
                ))
            })?
            .ok_or_else(|| err("the file is empty".into()))?;
        let pairs = root
            .as_map()
            .ok_or_else(|| err("expected a mapping".into()))?;
        let get = |name: &str| {
            pairs
                .iter()
                .find_map(|(k, v)| {
                    let key = k.key_text()?;
                    (key.trim_start_matches(':') == name)
                        .then(|| v.ruby_to_s())
                        .flatten()
                })
                .filter(|s| !s.trim().is_empty())
        };
        let region = get("region").ok_or_else(|| err("region is missing".into()))?;
        let (host_identifier, auth) = match (get("iam_user_arn"), get("iam_session_arn")) {
            (Some(_), Some(_)) => {
                return Err(err("give iam_user_arn or iam_session_arn, not both".into()))
            }
            (Some(arn), None) => (
                arn,
                OnPremisesAuth::User {
                    access_key_id: get("aws_access_key_id").ok_or_else(|| {
                        err("aws_access_key_id is missing (iam_user_arn needs it)".into())
                    })?,
                    secret_access_key: get("aws_secret_access_key").ok_or_else(|| {
                        err("aws_secret_access_key is missing (iam_user_arn needs it)".into())
                    })?,
                },
            ),
            (None, Some(arn)) => (
                arn,
                OnPremisesAuth::Session {
                    credentials_file: get("aws_credentials_file")
                        .ok_or_else(|| {
                            err("aws_credentials_file is missing (iam_session_arn needs it)".into())
                        })?
                        .into(),
                },
            ),
            (None, None) => return Err(err("iam_user_arn or iam_session_arn is missing".into())),
        };
        if !host_identifier.starts_with("arn:") {
            return Err(err(format!("{host_identifier:?} is not an ARN")));
        }
        Ok(OnPremises {
            region,
            host_identifier,
            auth,
        })
    }
}

/// Work out the identity. The on-premises file wins when it exists (as in
/// the Ruby agent); `AWS_REGION` and `AWS_HOST_IDENTIFIER` override as there.
/// `http` carries AWS calls (through `:proxy_uri:` when set); `direct_http`
/// reaches the instance metadata service, which is never proxied.
pub async fn resolve(
    config: &Config,
    http: SharedHttpClient,
    direct_http: SharedHttpClient,
) -> Result<HostIdentity, IdentityError> {
    let env_region = std::env::var("AWS_REGION").ok().filter(|s| !s.is_empty());
    let env_host = std::env::var("AWS_HOST_IDENTIFIER")
        .ok()
        .filter(|s| !s.is_empty());
    let path = &config.on_premises_config_file;
    if let Ok(text) = std::fs::read_to_string(path) {
        let op = OnPremises::parse(&text, path)?;
        let credentials = match op.auth {
            OnPremisesAuth::User {
                access_key_id,
                secret_access_key,
            } => SharedCredentialsProvider::new(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "on-premises-user",
            )),
            OnPremisesAuth::Session { credentials_file } => {
                SharedCredentialsProvider::new(Cached::new(SessionFile {
                    path: credentials_file,
                }))
            }
        };
        return Ok(HostIdentity {
            host_identifier: env_host.unwrap_or(op.host_identifier),
            region: env_region.unwrap_or(op.region),
            credentials,
            kind: "on-premises",
            instance: None,
        });
    }
    let imds_endpoint = config
        .imds_endpoint
        .clone()
        .unwrap_or_else(|| crate::net::imds::DEFAULT_ENDPOINT.into());
    let imds = Imds::new(&imds_endpoint, !config.disable_imds_v1)
        .map_err(|e| IdentityError::Other(e.to_string()))?;
    let id = imds.identity().await?;
    let region = env_region.unwrap_or(id.region.clone());
    let host_identifier = env_host
        .unwrap_or_else(|| endpoint::ec2_host_identifier(&id.region, &id.account, &id.instance_id));
    let pc = aws_config::provider_config::ProviderConfig::empty()
        .with_http_client(http)
        .with_region(Some(aws_config::Region::new(region.clone())))
        .with_sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
        .with_time_source(aws_smithy_async::time::SystemTimeSource::new());
    // Instance metadata is link-local: never through `:proxy_uri:`.
    let imds_client = aws_config::imds::Client::builder()
        .configure(&pc.clone().with_http_client(direct_http))
        .endpoint(imds_endpoint.as_str())
        .map_err(|e| IdentityError::Other(format!("imds endpoint: {e}")))?
        .build();
    let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
        .region(aws_config::Region::new(region.clone()))
        .configure(pc)
        .imds_client(imds_client)
        .build()
        .await;
    // aws-config's instance profile provider speaks IMDSv2 only; ours
    // follows it for hosts where only IMDSv1 answers (and is allowed).
    let credentials = if config.disable_imds_v1 {
        SharedCredentialsProvider::new(Cached::new(chain))
    } else {
        SharedCredentialsProvider::new(Cached::new(Fallback {
            first: chain,
            then: ImdsCredentials(imds),
        }))
    };
    Ok(HostIdentity {
        host_identifier,
        region,
        credentials,
        kind: "ec2",
        instance: Some((
            id.instance_id.clone(),
            id.private_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
        )),
    })
}

/// `first`, and when it fails for any reason `then` (the standard chain
/// stops at the first provider error, and its IMDS provider fails hard where
/// only IMDSv1 answers).
#[derive(Debug)]
struct Fallback<A, B> {
    first: A,
    then: B,
}

impl<A: ProvideCredentials, B: ProvideCredentials> ProvideCredentials for Fallback<A, B> {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            match self.first.provide_credentials().await {
                Ok(c) => Ok(c),
                Err(first) => self.then.provide_credentials().await.map_err(|_| first),
            }
        })
    }
}

#[derive(Debug)]
struct ImdsCredentials(Imds);

impl ProvideCredentials for ImdsCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.0.role_credentials().await.map_err(|e| {
                aws_credential_types::provider::error::CredentialsError::provider_error(
                    e.to_string(),
                )
            })
        })
    }
}

/// Credentials kept until shortly before they expire. The chain's
/// providers fetch on every call; the agent signs a request every few
/// seconds.
#[derive(Debug)]
pub struct Cached<P> {
    inner: P,
    held: Arc<Mutex<Option<Credentials>>>,
}

/// Refresh this long before expiry, so a request signed just before never
/// reaches AWS with stale credentials.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl<P: ProvideCredentials> Cached<P> {
    pub fn new(inner: P) -> Cached<P> {
        Cached {
            inner,
            held: Arc::new(Mutex::new(None)),
        }
    }

    async fn get(&self) -> provider::Result {
        if let Some(c) = self.held.lock().ok().and_then(|h| h.clone()) {
            let fresh = match c.expiry() {
                Some(exp) => SystemTime::now() + REFRESH_MARGIN < exp,
                None => true,
            };
            if fresh {
                return Ok(c);
            }
        }
        let c = self.inner.provide_credentials().await?;
        if let Ok(mut h) = self.held.lock() {
            *h = Some(c.clone());
        }
        Ok(c)
    }
}

impl<P: ProvideCredentials> ProvideCredentials for Cached<P> {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}

/// An IAM session's credentials file (`[default]` profile), re-read on
/// every use: the on-premises session helper rewrites it about hourly.
#[derive(Debug)]
struct SessionFile {
    path: PathBuf,
}

impl SessionFile {
    fn read(&self) -> provider::Result {
        use aws_credential_types::provider::error::CredentialsError;
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            CredentialsError::provider_error(format!("{}: {e}", self.path.display()))
        })?;
        let (id, secret, token) = parse_credentials_file(&text).ok_or_else(|| {
            CredentialsError::invalid_configuration(format!(
                "{}: no aws_access_key_id and aws_secret_access_key in [default]",
                self.path.display()
            ))
        })?;
        // Expire quickly so the next change of the file is seen.
        let expiry = SystemTime::now() + REFRESH_MARGIN + Duration::from_secs(60);
        Ok(Credentials::new(
            id,
            secret,
            token,
            Some(expiry),
            "on-premises-session",
        ))
    }
}

impl ProvideCredentials for SessionFile {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(self.read())
    }
}

/// `[default]` keys of an AWS credentials file.
pub fn parse_credentials_file(text: &str) -> Option<(String, String, Option<String>)> {
    let mut in_default = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_default = l.trim_matches(|c| c == '[' || c == ']').trim() == "default";
            continue;
        }
        if !in_default {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some((id?, secret?, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_premises_user_file() {
        let t = "---\nregion: us-west-2\niam_user_arn: arn:aws:iam::123:user/host1\naws_access_key_id: AKIA1\naws_secret_access_key: s3cr3t\n";
        let op = OnPremises::parse(t, Path::new("op.yml")).unwrap();
        assert_eq!(op.region, "us-west-2");
        assert_eq!(op.host_identifier, "arn:aws:iam::123:user/host1");
        assert!(!format!("{op:?}").contains("s3cr3t"));
    }

    #[test]
    fn on_premises_errors_name_the_file_and_key() {
        let e = OnPremises::parse(
            "region: x\niam_session_arn: arn:aws:sts::1:assumed-role/r/s\n",
            Path::new("/etc/op.yml"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "/etc/op.yml: aws_credentials_file is missing (iam_session_arn needs it)"
        );
    }

    #[test]
    fn credentials_file_default_profile() {
        let t = "[other]\naws_access_key_id = X\n[default]\naws_access_key_id = A\naws_secret_access_key = B\naws_session_token = C\n";
        assert_eq!(
            parse_credentials_file(t),
            Some(("A".into(), "B".into(), Some("C".into())))
        );
        assert_eq!(
            parse_credentials_file("[default]\naws_access_key_id=A\n"),
            None
        );
    }
}
