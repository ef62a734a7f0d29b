//! The deployment specification as the executor needs it. The daemon builds
//! it from the signed specification; `local` builds it from its options.

use std::path::PathBuf;

use appspec::FileExistsBehavior;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleType {
    Tar,
    Tgz,
    Zip,
    Directory,
}

impl BundleType {
    pub fn parse(s: &str) -> Option<BundleType> {
        match s {
            "tar" => Some(BundleType::Tar),
            "tgz" => Some(BundleType::Tgz),
            "zip" => Some(BundleType::Zip),
            "directory" => Some(BundleType::Directory),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BundleType::Tar => "tar",
            BundleType::Tgz => "tgz",
            BundleType::Zip => "zip",
            BundleType::Directory => "directory",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevisionSource {
    S3 {
        bucket: String,
        key: String,
        version: Option<String>,
        etag: Option<String>,
        bundle_type: BundleType,
    },
    GitHub {
        account: String,
        repository: String,
        commit: String,
        bundle_type: BundleType,
    },
    LocalFile {
        location: PathBuf,
        bundle_type: BundleType,
    },
    LocalDirectory {
        location: PathBuf,
    },
}

impl RevisionSource {
    pub fn bundle_type(&self) -> BundleType {
        match self {
            RevisionSource::S3 { bundle_type, .. }
            | RevisionSource::GitHub { bundle_type, .. }
            | RevisionSource::LocalFile { bundle_type, .. } => *bundle_type,
            RevisionSource::LocalDirectory { .. } => BundleType::Directory,
        }
    }

    /// The BUNDLE_* variables scripts see for this revision.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        match self {
            RevisionSource::S3 {
                bucket,
                key,
                version,
                etag,
                ..
            } => {
                v.push(("BUNDLE_BUCKET".into(), bucket.clone()));
                v.push(("BUNDLE_KEY".into(), key.clone()));
                if let Some(ver) = version {
                    v.push(("BUNDLE_VERSION".into(), ver.clone()));
                }
                if let Some(e) = etag {
                    v.push(("BUNDLE_ETAG".into(), e.clone()));
                }
            }
            RevisionSource::GitHub { commit, .. } => {
                v.push(("BUNDLE_COMMIT".into(), commit.clone()))
            }
            RevisionSource::LocalFile { .. } | RevisionSource::LocalDirectory { .. } => {}
        }
        v
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentSpec {
    pub deployment_id: String,
    pub deployment_group_id: String,
    pub deployment_group_name: String,
    pub application_name: String,
    /// `user`, `autoscaling`, `codeDeployRollback`, ...
    pub deployment_creator: String,
    pub blue_green: bool,
    /// The appspec file name inside the revision.
    pub appspec_filename: String,
    pub file_exists_behavior: Option<FileExistsBehavior>,
    /// `None` when the service did not send the list (the Install check is skipped).
    pub all_possible_events: Option<Vec<String>>,
    pub revision: RevisionSource,
}

impl DeploymentSpec {
    /// The variables every script of this deployment sees.
    pub fn script_env(&self, event: &str) -> Vec<(String, String)> {
        let mut v = vec![
            ("LIFECYCLE_EVENT".to_string(), event.to_string()),
            ("DEPLOYMENT_ID".to_string(), self.deployment_id.clone()),
            (
                "APPLICATION_NAME".to_string(),
                self.application_name.clone(),
            ),
            (
                "DEPLOYMENT_GROUP_NAME".to_string(),
                self.deployment_group_name.clone(),
            ),
            (
                "DEPLOYMENT_GROUP_ID".to_string(),
                self.deployment_group_id.clone(),
            ),
        ];
        v.extend(self.revision.env());
        v
    }
}
