//! The executor's `Fetcher` for S3 and GitHub revisions: drives the async
//! clients from the executor's worker thread.

use std::path::Path;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use tokio::runtime::Handle;

use crate::config::Config;
use crate::executor::Fetcher;
use crate::net::http::HttpClient;
use crate::revision::fetch::{self, S3Fetch};
use crate::spec::RevisionSource;

/// The HTTP client the AWS SDK clients use: rustls on ring (no C crypto to
/// build), the system's roots, and `:proxy_uri:`.
pub fn sdk_http_client(proxy: Option<&str>) -> Result<SharedHttpClient, String> {
    let proxy = proxy
        .map(|p| ProxyConfig::all(p).map_err(|e| format!("invalid proxy_uri {p:?}: {e}")))
        .transpose()?;
    Ok(
        aws_smithy_http_client::Builder::new().build_with_connector_fn(
            move |settings, components| {
                let mut b = Connector::builder();
                if let Some(s) = settings {
                    b = b.connector_settings(s.clone());
                }
                if let Some(sleep) = components.and_then(|c| c.sleep_impl()) {
                    b = b.sleep_impl(sleep);
                }
                if let Some(p) = &proxy {
                    b = b.proxy_config(p.clone());
                }
                b.tls_provider(Provider::Rustls(CryptoMode::Ring)).build()
            },
        ),
    )
}

pub struct RemoteFetcher {
    pub handle: Handle,
    /// Built at the first S3 download: an idle agent (or one deploying
    /// from GitHub) never pays for the S3 client's code and state.
    s3: std::sync::OnceLock<S3Fetch>,
    s3_config: aws_sdk_s3::Config,
    parts: usize,
    pub http: HttpClient,
    pub github_endpoint: String,
}

impl RemoteFetcher {
    pub fn new(
        config: &Config,
        region: &str,
        credentials: SharedCredentialsProvider,
        sdk_http: SharedHttpClient,
        http: HttpClient,
        handle: Handle,
    ) -> RemoteFetcher {
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .credentials_provider(credentials)
            .http_client(sdk_http)
            .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
            .use_fips(config.use_fips_mode);
        if let Some(ep) = &config.s3_endpoint_override {
            // A custom endpoint (S3-compatible store, VPC endpoint URL) is
            // addressed path-style: bucket names need not be DNS labels there.
            b = b.endpoint_url(ep).force_path_style(true);
        }
        RemoteFetcher {
            handle,
            s3: std::sync::OnceLock::new(),
            s3_config: b.build(),
            parts: config.s3_download_parts,
            http,
            github_endpoint: config.github_endpoint.clone(),
        }
    }

    fn s3(&self) -> &S3Fetch {
        self.s3.get_or_init(|| S3Fetch {
            client: aws_sdk_s3::Client::from_conf(self.s3_config.clone()),
            parts: self.parts,
            part_size: fetch::PART_SIZE,
        })
    }
}

impl Fetcher for RemoteFetcher {
    fn fetch(&self, revision: &RevisionSource, dest: &Path) -> Result<String, String> {
        let t0 = std::time::Instant::now();
        let got = self.handle.block_on(async {
            match revision {
                RevisionSource::S3 {
                    bucket,
                    key,
                    version,
                    etag,
                    ..
                } => {
                    self.s3()
                        .download(bucket, key, version.as_deref(), etag.as_deref(), dest)
                        .await
                }
                RevisionSource::GitHub {
                    account,
                    repository,
                    commit,
                    bundle_type,
                    token,
                } => {
                    let r = fetch::GitHubRef {
                        account,
                        repository,
                        commit,
                        bundle_type: *bundle_type,
                        token: token.as_ref(),
                    };
                    fetch::github_download(&self.http, &self.github_endpoint, r, dest).await
                }
                _ => Err(fetch::FetchError::Io("not a remote revision".into())),
            }
        });
        let f = got.map_err(|e| e.to_string())?;
        tracing::info!(
            bytes = f.bytes,
            parts = f.parts,
            etag = f.etag.as_deref().unwrap_or(""),
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "bundle downloaded"
        );
        Ok(format!(
            "downloaded {} bytes in {:.2}s{}",
            f.bytes,
            t0.elapsed().as_secs_f64(),
            if f.parts > 1 {
                format!(" ({} parts)", f.parts)
            } else {
                String::new()
            }
        ))
    }
}

/// `codedeploy-agent local` with an `s3://` bundle: credentials and region
/// from the standard AWS chain (environment, profile, instance metadata).
pub struct LocalRemote {
    pub fetcher: RemoteFetcher,
    _runtime: tokio::runtime::Runtime,
}

pub fn local_remote(config: &Config) -> Result<LocalRemote, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let sdk_http = sdk_http_client(config.proxy_uri.as_deref())?;
    let shared = rt.block_on(
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(sdk_http.clone())
            .load(),
    );
    let region = shared
        .region()
        .map(|r| r.to_string())
        .ok_or("no AWS region: set AWS_REGION (or a profile's region) to read a bundle from S3")?;
    let credentials = shared
        .credentials_provider()
        .ok_or("no AWS credentials provider is available")?;
    let http = HttpClient::new(config.proxy_uri.as_deref(), config.http_read_timeout)
        .map_err(|e| e.to_string())?;
    let fetcher = RemoteFetcher::new(
        config,
        &region,
        credentials,
        sdk_http,
        http,
        rt.handle().clone(),
    );
    Ok(LocalRemote {
        fetcher,
        _runtime: rt,
    })
}
