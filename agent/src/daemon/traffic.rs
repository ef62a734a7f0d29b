//! The executor's `Traffic` on EC2: the `loadBalancer` drain and restore of
//! `hooks-builtin`, driven from the executor's worker thread, and the
//! restores the daemon runs outside commands (after a crash, or when a
//! drained deployment is abandoned).

use std::path::Path;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use hooks_builtin::aws::{Clients, Endpoints};
use hooks_builtin::journal::Store;
use hooks_builtin::{Drainer, Failure, HostId, Why};
use tokio::runtime::Handle;

use crate::config::Config;
use crate::diagnostics::{Diagnostics, ErrorCode};
use crate::executor::Traffic;
use crate::fsutil::{self, Durability};
use crate::spec::DeploymentSpec;

fn persist(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fsutil::write_atomic(path, bytes, 0o600, Durability::Synced)
}

pub struct LbTraffic {
    pub drainer: Drainer,
    pub handle: Handle,
}

impl LbTraffic {
    pub fn new(
        config: &Config,
        region: &str,
        credentials: SharedCredentialsProvider,
        http: SharedHttpClient,
        host: HostId,
        handle: Handle,
    ) -> LbTraffic {
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .credentials_provider(credentials)
            .http_client(http)
            .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
            .use_fips(config.use_fips_mode)
            .build();
        let endpoints = Endpoints {
            autoscaling: config.autoscaling_endpoint.clone(),
            elb: config.elb_endpoint.clone(),
        };
        LbTraffic {
            drainer: Drainer {
                clients: Clients::new(&sdk, &endpoints),
                store: Store::new(&config.root_dir, persist),
                host,
                poll_interval: Duration::from_millis(config.load_balancer_poll_ms),
            },
            handle,
        }
    }

    /// Restore one group's journal outside a command.
    pub async fn finish(&self, group: &str, why: Why) {
        match self.drainer.restore(group, why).await {
            Ok(Some(o)) => {
                tracing::info!(group, ?why, summary = %o.summary, timeline = %o.log, "loadBalancer restore")
            }
            Ok(None) => {}
            Err((f, log)) => {
                tracing::error!(group, ?why, error = %f.message, timeline = %log, "loadBalancer restore failed")
            }
        }
    }
}

fn diagnostics(action: hooks_builtin::Action, f: Failure, log: String) -> Diagnostics {
    let code = if f.expected {
        ErrorCode::ScriptFailed
    } else {
        ErrorCode::UnknownError
    };
    let mut d = Diagnostics::error(code, action.script_name(), f.message);
    d.log = log;
    d
}

impl Traffic for LbTraffic {
    fn drain(
        &self,
        spec: &DeploymentSpec,
        lb: &appspec::load_balancer::LoadBalancer,
    ) -> Result<String, Diagnostics> {
        let r = self.handle.block_on(self.drainer.drain(
            &spec.deployment_id,
            &spec.deployment_group_id,
            lb,
        ));
        match r {
            Ok(o) => {
                tracing::info!(deployment = %spec.deployment_id, summary = %o.summary, timeline = %o.log, "loadBalancer drain");
                Ok(o.summary)
            }
            Err((f, log)) => Err(diagnostics(hooks_builtin::Action::Drain, f, log)),
        }
    }

    fn stopping(&self, spec: &DeploymentSpec) {
        if let Err(e) = self.drainer.stopping(&spec.deployment_group_id) {
            tracing::error!(error = %e, "cannot update the drain journal");
        }
    }

    fn pending(&self, spec: &DeploymentSpec) -> bool {
        self.drainer
            .journal_of(&spec.deployment_group_id)
            .as_deref()
            == Some(spec.deployment_id.as_str())
    }

    fn touch(&self, spec: &DeploymentSpec) {
        if let Err(e) = self
            .drainer
            .touch(&spec.deployment_group_id, &spec.deployment_id)
        {
            tracing::warn!(deployment = %spec.deployment_id, error = %e, "cannot re-arm abandonAfter in the drain journal");
        }
    }

    fn restore(&self, spec: &DeploymentSpec, why: Why) -> Result<Option<String>, Diagnostics> {
        match self
            .handle
            .block_on(self.drainer.restore(&spec.deployment_group_id, why))
        {
            Ok(Some(o)) => {
                tracing::info!(deployment = %spec.deployment_id, ?why, summary = %o.summary, timeline = %o.log, "loadBalancer restore");
                Ok(Some(o.summary))
            }
            Ok(None) => Ok(None),
            Err((f, log)) => Err(diagnostics(hooks_builtin::Action::Restore, f, log)),
        }
    }
}
