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

/// A credential that must never reach a log: `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(REDACTED)")
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
        /// `GitHubAccessToken` of the specification; `None` is anonymous.
        token: Option<Secret>,
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
    /// `ReuseArchiveFromDeploymentId`: a RESTART deployment may take the
    /// archive of this earlier deployment instead of downloading it again.
    pub reuse_archive_from: Option<String>,
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

/// Why a deployment specification's JSON was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("deployment specification: {0}")]
pub struct SpecError(pub String);

impl DeploymentSpec {
    /// The specification JSON the service signs (field names as the
    /// official agents read them; Ruby `deployment_specification.rb`).
    pub fn from_json(text: &str) -> Result<DeploymentSpec, SpecError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| SpecError(format!("not valid JSON: {e}")))?;
        let o = v
            .as_object()
            .ok_or_else(|| SpecError("expected a JSON object".into()))?;
        // Checked in this order, so the first problem is the one named.
        let deployment_id = deployment_id(o)?;
        let group_id = need(o, "DeploymentGroupId", "")?;
        check_component("DeploymentGroupId", &group_id)?;
        let revision = revision(o)?;
        let file_exists_behavior = file_exists_behavior(o)?;
        let all_possible_events = all_possible_events(o)?;
        let appspec_filename = appspec_filename(o)?;
        Ok(DeploymentSpec {
            deployment_id,
            deployment_group_id: group_id,
            deployment_group_name: need(o, "DeploymentGroupName", "")?,
            application_name: need(o, "ApplicationName", "")?,
            deployment_creator: text_of(o, "DeploymentCreator").unwrap_or_else(|| "user".into()),
            blue_green: text_of(o, "DeploymentType").as_deref() == Some("BLUE_GREEN"),
            appspec_filename,
            file_exists_behavior,
            all_possible_events,
            revision,
            reuse_archive_from: text_of(o, "ReuseArchiveFromDeploymentId"),
        })
    }
}

type Obj = serde_json::Map<String, serde_json::Value>;

fn text_of(obj: &Obj, k: &str) -> Option<String> {
    obj.get(k)
        .and_then(|x| x.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Member `k` of `obj`, found at `at` (for the message).
fn need(obj: &Obj, k: &str, at: &str) -> Result<String, SpecError> {
    text_of(obj, k).ok_or_else(|| SpecError(format!("{at}{k} is missing")))
}

fn sub<'a>(rev: &'a Obj, name: &str) -> Result<&'a Obj, SpecError> {
    rev.get(name)
        .and_then(|r| r.as_object())
        .ok_or_else(|| SpecError(format!("Revision.{name} is missing")))
}

/// An archive's BundleType (a directory is its own revision type).
fn bundle(obj: &Obj, at: &str) -> Result<BundleType, SpecError> {
    const ALLOWED: [&str; 3] = ["tar", "tgz", "zip"];
    let b = need(obj, "BundleType", at)?;
    match BundleType::parse(&b) {
        Some(t) if ALLOWED.contains(&b.as_str()) => Ok(t),
        _ => Err(SpecError(format!(
            "{at}BundleType must be one of {}, found {b:?}",
            ALLOWED.join(", ")
        ))),
    }
}

/// The deployment id, bare or as `arn:aws:codedeploy:<region>:<account>:deployment/<id>`.
fn deployment_id(o: &Obj) -> Result<String, SpecError> {
    let mut id = need(o, "DeploymentId", "")?;
    if id.starts_with("arn:") {
        id = id
            .splitn(6, ':')
            .nth(5)
            .and_then(|r| r.split_once('/'))
            .map(|(_, id)| id.to_string())
            .ok_or_else(|| SpecError(format!("DeploymentId {id:?} is not a deployment ARN")))?;
    }
    check_component("DeploymentId", &id)?;
    Ok(id)
}

fn revision(o: &Obj) -> Result<RevisionSource, SpecError> {
    let rev = o
        .get("Revision")
        .and_then(|r| r.as_object())
        .ok_or_else(|| SpecError("Revision is missing".into()))?;
    let local = "Revision.LocalRevision.";
    match need(rev, "RevisionType", "Revision.")?.as_str() {
        "S3" => {
            let s3 = sub(rev, "S3Revision")?;
            let at = "Revision.S3Revision.";
            Ok(RevisionSource::S3 {
                bucket: need(s3, "Bucket", at)?,
                key: need(s3, "Key", at)?,
                version: text_of(s3, "Version"),
                etag: text_of(s3, "ETag"),
                bundle_type: bundle(s3, at)?,
            })
        }
        "GitHub" => github(o, sub(rev, "GitHubRevision")?),
        "Local File" => {
            let l = sub(rev, "LocalRevision")?;
            Ok(RevisionSource::LocalFile {
                location: need(l, "Location", local)?.into(),
                bundle_type: bundle(l, local)?,
            })
        }
        "Local Directory" => Ok(RevisionSource::LocalDirectory {
            location: need(sub(rev, "LocalRevision")?, "Location", local)?.into(),
        }),
        other => Err(SpecError(format!(
            "Revision.RevisionType {other:?} is not S3, GitHub, Local File or Local Directory"
        ))),
    }
}

fn github(o: &Obj, gh: &Obj) -> Result<RevisionSource, SpecError> {
    let at = "Revision.GitHubRevision.";
    // The service sends no BundleType for GitHub in older specifications:
    // the tarball is what the Ruby agent fetched.
    let bundle_type = match text_of(gh, "BundleType") {
        None => BundleType::Tgz,
        Some(_) => bundle(gh, at)?,
    };
    let account = need(gh, "Account", at)?;
    let repository = need(gh, "Repository", at)?;
    let commit = need(gh, "CommitId", at)?;
    for (what, value) in [
        ("Account", &account),
        ("Repository", &repository),
        ("CommitId", &commit),
    ] {
        check_component(what, value)?;
    }
    Ok(RevisionSource::GitHub {
        account,
        repository,
        commit,
        bundle_type,
        token: text_of(o, "GitHubAccessToken").map(Secret),
    })
}

fn file_exists_behavior(o: &Obj) -> Result<Option<FileExistsBehavior>, SpecError> {
    o.get("AgentActionOverrides")
        .and_then(|a| a.get("AgentOverrides"))
        .and_then(|a| a.get("FileExistsBehavior"))
        .and_then(|f| f.as_str())
        .filter(|s| !s.is_empty())
        .map(|f| {
            FileExistsBehavior::parse(&f.to_ascii_uppercase()).ok_or_else(|| {
                SpecError(format!(
                    "AgentActionOverrides.AgentOverrides.FileExistsBehavior {f:?} is not DISALLOW, OVERWRITE or RETAIN"
                ))
            })
        })
        .transpose()
}

fn all_possible_events(o: &Obj) -> Result<Option<Vec<String>>, SpecError> {
    let Some(serde_json::Value::Array(a)) = o.get("AllPossibleLifecycleEvents") else {
        return Ok(None);
    };
    if a.is_empty() {
        return Ok(None);
    }
    a.iter()
        .map(|e| {
            e.as_str()
                .map(str::to_string)
                .ok_or_else(|| SpecError("AllPossibleLifecycleEvents must list names".into()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn appspec_filename(o: &Obj) -> Result<String, SpecError> {
    let name = text_of(o, "AppSpecFilename").unwrap_or_else(|| "appspec.yml".into());
    if name.starts_with('/') || name.split('/').any(|c| c == "..") {
        return Err(SpecError(format!(
            "AppSpecFilename {name:?} must be a path inside the revision"
        )));
    }
    Ok(name)
}

/// Values that become one path component (or one URL path segment) must
/// not be able to climb out of it.
fn check_component(what: &str, value: &str) -> Result<(), SpecError> {
    if value == "." || value == ".." || value.contains('/') || value.contains('\0') {
        return Err(SpecError(format!(
            "{what} {value:?} cannot be used as a path component"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_spec(extra: &str) -> String {
        format!(
            r#"{{"DeploymentId":"arn:aws:codedeploy:us-east-1:123456789012:deployment/d-ABCDEFGHI",
            "DeploymentGroupId":"0a1b2c3d-aaaa","DeploymentGroupName":"web","ApplicationName":"shop",
            "DeploymentCreator":"user","DeploymentType":"IN_PLACE",
            "AgentActionOverrides":{{"AgentOverrides":{{"FileExistsBehavior":"overwrite"}}}},
            "AllPossibleLifecycleEvents":["ApplicationStop","DownloadBundle"],
            "Revision":{{"RevisionType":"S3","S3Revision":{{"Bucket":"b","Key":"k/app.zip","BundleType":"zip","Version":"v1","ETag":"abc"}}}}{extra}}}"#
        )
    }

    #[test]
    fn reads_an_s3_specification() {
        let s = DeploymentSpec::from_json(&s3_spec("")).unwrap();
        assert_eq!(s.deployment_id, "d-ABCDEFGHI");
        assert_eq!(s.file_exists_behavior, Some(FileExistsBehavior::Overwrite));
        assert_eq!(s.appspec_filename, "appspec.yml");
        assert_eq!(s.all_possible_events.as_ref().unwrap().len(), 2);
        assert!(
            matches!(&s.revision, RevisionSource::S3 { version: Some(v), bundle_type: BundleType::Zip, .. } if v == "v1")
        );
        assert_eq!(s.reuse_archive_from, None);
    }

    #[test]
    fn github_token_is_kept_out_of_debug_output() {
        let j = r#"{"DeploymentId":"d-1","DeploymentGroupId":"g","DeploymentGroupName":"n","ApplicationName":"a",
            "GitHubAccessToken":"ghp_supersecret","ReuseArchiveFromDeploymentId":"d-0",
            "Revision":{"RevisionType":"GitHub","GitHubRevision":{"Account":"acme","Repository":"web","CommitId":"0123abc"}}}"#;
        let s = DeploymentSpec::from_json(j).unwrap();
        assert!(!format!("{s:?}").contains("supersecret"));
        assert!(
            matches!(&s.revision, RevisionSource::GitHub { token: Some(t), bundle_type: BundleType::Tgz, .. } if t.0 == "ghp_supersecret")
        );
        assert_eq!(s.reuse_archive_from.as_deref(), Some("d-0"));
    }

    #[test]
    fn refuses_missing_and_hostile_fields() {
        let e = DeploymentSpec::from_json(r#"{"DeploymentId":"d-1"}"#).unwrap_err();
        assert_eq!(e.0, "DeploymentGroupId is missing");
        let e =
            DeploymentSpec::from_json(&s3_spec("").replace("0a1b2c3d-aaaa", "../etc")).unwrap_err();
        assert!(e.0.contains("DeploymentGroupId \"../etc\""), "{e}");
        let e = DeploymentSpec::from_json(&s3_spec("").replace("\"zip\"", "\"rar\"")).unwrap_err();
        assert!(
            e.0.contains("Revision.S3Revision.BundleType must be one of tar, tgz, zip"),
            "{e}"
        );
        let e =
            DeploymentSpec::from_json(&s3_spec(r#","AppSpecFilename":"../x.yml""#)).unwrap_err();
        assert!(e.0.contains("AppSpecFilename"), "{e}");
    }
}
