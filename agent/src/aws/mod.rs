//! Every AWS client and credential of the agent, from one context: the
//! region, the credentials and the SDK's HTTP client (rustls, `:proxy_uri:`),
//! made once, at the daemon's start from the host's identity (`identity`),
//! or for `local` from the standard AWS chain. The S3 client of the
//! revision fetcher and the Auto Scaling and load-balancer clients of the
//! `loadBalancer` steps are built here, from that context alone. (The
//! commands API has its own signed client, `net::control`.)

pub mod identity;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::config::Config;

/// The HTTP client the AWS SDK clients use: rustls on ring (no C crypto to
/// build), the system's roots, and `proxy` (`:proxy_uri:`).
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

/// What every AWS client of one agent shares.
#[derive(Clone, Debug)]
pub struct Context {
    /// The host's region.
    pub region: String,
    /// The host's credentials (instance profile, on-premises file ...).
    pub credentials: SharedCredentialsProvider,
    /// The SDK's HTTP client.
    pub http: SharedHttpClient,
    /// `:use_fips_mode:`.
    pub fips: bool,
}

impl Context {
    /// The context of `region` and `credentials`, with the HTTP client of
    /// `:proxy_uri:`.
    pub fn new(
        config: &Config,
        region: &str,
        credentials: SharedCredentialsProvider,
        http: SharedHttpClient,
    ) -> Context {
        Context {
            region: region.to_string(),
            credentials,
            http,
            fips: config.use_fips_mode,
        }
    }

    /// For `local`: region and credentials from the standard AWS chain
    /// (environment, profile, instance metadata).
    pub async fn from_default_chain(config: &Config) -> Result<Context, String> {
        let http = sdk_http_client(config.proxy_uri.as_deref())?;
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http.clone())
            .load()
            .await;
        let region = shared.region().map(|r| r.to_string()).ok_or(
            "no AWS region: set AWS_REGION (or a profile's region) to read a bundle from S3",
        )?;
        let credentials = shared
            .credentials_provider()
            .ok_or("no AWS credentials provider is available")?;
        Ok(Context::new(config, &region, credentials, http))
    }

    /// The base every SDK client is built from.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .credentials_provider(self.credentials.clone())
            .http_client(self.http.clone())
            .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
            .use_fips(self.fips)
            .build()
    }

    /// The S3 client's configuration. A custom endpoint
    /// (`:s3_endpoint_override:`: an S3-compatible store, a VPC endpoint
    /// URL) is addressed path-style: bucket names need not be DNS labels.
    pub fn s3_config(&self, config: &Config) -> aws_sdk_s3::Config {
        let mut b = aws_sdk_s3::config::Builder::from(&self.sdk_config());
        if let Some(ep) = &config.s3_endpoint_override {
            b = b.endpoint_url(ep).force_path_style(true);
        }
        b.build()
    }

    /// The Auto Scaling, Classic ELB and ELBv2 clients of the
    /// `loadBalancer` steps, with the configured endpoint overrides.
    pub fn load_balancing(&self, config: &Config) -> hooks_builtin::aws::Clients {
        let endpoints = hooks_builtin::aws::Endpoints {
            autoscaling: config.autoscaling_endpoint.clone(),
            elb: config.elb_endpoint.clone(),
        };
        hooks_builtin::aws::Clients::new(&self.sdk_config(), &endpoints)
    }
}
