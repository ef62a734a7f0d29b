//! The executor's `Fetcher` for S3 and GitHub revisions: drives the async
//! clients from the executor's worker thread. The S3 client comes from the
//! agent's AWS context (`aws`).

use std::path::Path;
use std::sync::Arc;

use tokio::runtime::Handle;

use crate::aws::Context;
use crate::command::Fetcher;
use crate::config::Config;
use crate::net::http::HttpClient;
use crate::revision::fetch::{self, S3Fetch};
use crate::revision::progress::Progress;
use crate::spec::RevisionSource;

/// Downloads S3 (through the SDK) and GitHub (through `net::http`) bundles.
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
    /// The fetcher of one agent: its AWS context, its HTTP client.
    pub fn new(config: &Config, aws: &Context, http: HttpClient, handle: Handle) -> RemoteFetcher {
        RemoteFetcher {
            handle,
            s3: std::sync::OnceLock::new(),
            s3_config: aws.s3_config(config),
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
    /// S3 downloads in ranged parts that report their bytes; GitHub's
    /// archive comes as one stream and is unpacked once whole.
    fn streams(&self, revision: &RevisionSource) -> bool {
        matches!(revision, RevisionSource::S3 { .. })
    }

    fn fetch(
        &self,
        revision: &RevisionSource,
        dest: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<String, String> {
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
                        .download(
                            bucket,
                            key,
                            version.as_deref(),
                            etag.as_deref(),
                            dest,
                            progress,
                        )
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
        crate::metrics::get().downloaded(f.bytes);
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

/// The fetcher of `codedeploy-agent local`, on a runtime of its own.
pub fn local_remote(config: &Config) -> Result<LocalRemote, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let aws = rt.block_on(Context::from_default_chain(config))?;
    let http = HttpClient::new(config.proxy_uri.as_deref(), config.http_read_timeout)
        .map_err(|e| e.to_string())?;
    let fetcher = RemoteFetcher::new(config, &aws, http, rt.handle().clone());
    Ok(LocalRemote {
        fetcher,
        _runtime: rt,
    })
}
