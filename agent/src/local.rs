//! `codedeploy-agent local`: a deployment on this host without the
//! CodeDeploy service, with the official `codedeploy-local` options,
//! defaults and event-ordering rules.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use appspec::{events, FileExistsBehavior};

use crate::command::{Executor, HostCommand};
use crate::config::Config;
use crate::diagnostics::Diagnostics;
use crate::layout;
use crate::spec::{BundleType, DeploymentSpec, RevisionSource};

#[derive(Clone, Debug)]
pub struct Options {
    pub bundle_location: String,
    pub bundle_type: String,
    pub file_exists_behavior: String,
    pub deployment_group: String,
    pub deployment_group_name: String,
    pub application_name: Option<String>,
    pub events: Option<Vec<String>>,
    /// `-A`: when given, that file must be in the bundle (no fallback).
    pub appspec_filename: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Bad options: nothing was done.
    #[error("ERROR: {0}")]
    Invalid(String),
    /// The deployment ran and failed; the details were printed.
    #[error("the local deployment failed")]
    Failed,
}

fn invalid(m: impl Into<String>) -> LocalError {
    LocalError::Invalid(m.into())
}

/// A deployment id in the official local format, `d-XXXXXXXXX-local`.
fn random_deployment_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = [0u8; 9];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (t >> (i * 7)) as u8 ^ std::process::id() as u8;
        }
    }
    let id: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("d-{id}-local")
}

/// The checks of the official CLI validator, then the deployment spec.
pub fn build_spec(
    o: &Options,
    cwd: &Path,
    tracking: &str,
) -> Result<(DeploymentSpec, Vec<String>), LocalError> {
    let loc = o.bundle_location.as_str();
    if loc.starts_with("http://") {
        return Err(invalid(format!(
            "location {loc} cannot be http, only encrypted (https) url endpoints supported"
        )));
    }
    if loc.starts_with("https://") {
        return Err(invalid(format!(
            "location {loc}: GitHub locations are not supported by codedeploy-local; use s3://bucket/key or a local path"
        )));
    }
    let Some(bundle_type) = BundleType::parse(&o.bundle_type) else {
        return Err(invalid(format!(
            "type {} is not a valid type. Must be one of tgz,tar,zip,directory",
            o.bundle_type
        )));
    };
    // The official tool accepts the value in any case.
    let feb = FileExistsBehavior::parse(&o.file_exists_behavior.to_ascii_uppercase()).ok_or_else(
        || {
            invalid(format!(
                "file-exists-behavior {} is not valid. Must be one of DISALLOW,OVERWRITE,RETAIN",
                o.file_exists_behavior
            ))
        },
    )?;
    let group = &o.deployment_group;
    if let Some(why) = layout::group_refusal(group, tracking) {
        return Err(invalid(why));
    }
    if let Some(name) = &o.appspec_filename {
        let p = Path::new(name);
        if p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(invalid(format!(
                "appspec-filename {name:?} must be a path inside the bundle (no leading '/', no '..')"
            )));
        }
    }
    let revision = match loc.strip_prefix("s3://") {
        Some(rest) => parse_s3_location(loc, rest, bundle_type)?,
        None => local_revision(o, loc, bundle_type, cwd)?,
    };
    let sequence = events::local_sequence(o.events.as_deref()).map_err(invalid)?;
    let spec = DeploymentSpec {
        deployment_id: random_deployment_id(),
        deployment_group_id: group.clone(),
        deployment_group_name: o.deployment_group_name.clone(),
        application_name: o
            .application_name
            .clone()
            .unwrap_or_else(|| loc.to_string()),
        deployment_creator: "user".into(),
        blue_green: false,
        appspec_filename: o
            .appspec_filename
            .clone()
            .unwrap_or_else(|| appspec::DEFAULT_NAMES[0].to_string()),
        file_exists_behavior: Some(feb),
        all_possible_events: Some(events::local_all_possible(o.events.as_deref())),
        revision,
        reuse_archive_from: None,
    };
    Ok((spec, sequence))
}

/// Run the deployment, printing one line per event. Returns the
/// deployment directory.
pub fn run(config: &Config, o: &Options) -> Result<PathBuf, LocalError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let (spec, sequence) = build_spec(o, &cwd, &config.ongoing_deployment_tracking)?;
    config.check_root_dir().map_err(invalid)?;
    let remote = match spec.revision {
        RevisionSource::S3 { .. } => {
            Some(crate::revision::remote::local_remote(config).map_err(invalid)?)
        }
        _ => None,
    };
    let mut exec = Executor::new(config);
    exec.fetcher = remote
        .as_ref()
        .map(|r| &r.fetcher as &dyn crate::command::Fetcher);
    let dir = exec.deployment_dir(&spec);
    println!(
        "Starting to execute deployment from within folder {}",
        dir.display()
    );
    let _lock = exec
        .layout
        .lock_group(&spec.deployment_group_id)
        .map_err(|e| {
            invalid(format!(
                "cannot lock deployment group {}: {e}",
                spec.deployment_group_id
            ))
        })?;
    tracing::info!(deployment = %spec.deployment_id, group = %spec.deployment_group_id, events = %sequence.join(","), "local deployment started");
    for event in &sequence {
        let t0 = Instant::now();
        let command = HostCommand::parse(event);
        let deployment = exec.deployment(spec.clone());
        let result = exec
            .execute(&command, &deployment, &mut |script| {
                println!("{event:<20} {:<8} {script}", "running")
            })
            .and_then(|r| named_appspec_present(o, &command, &dir).map(|()| r));
        let secs = t0.elapsed().as_secs_f64();
        match result {
            Ok(r) => {
                let status = if r.skipped { "skipped" } else { "ok" };
                println!("{event:<20} {status:<8} {secs:>6.2}s  {}", r.summary);
                if command == HostCommand::DownloadBundle {
                    note_load_balancer(&deployment);
                }
                tracing::info!(deployment = %spec.deployment_id, event = %event, elapsed_ms = (secs * 1000.0) as u64, summary = %r.summary, "event succeeded");
            }
            Err(d) => {
                println!("{event:<20} {:<8} {secs:>6.2}s  {}", "FAILED", d.message);
                tracing::error!(deployment = %spec.deployment_id, event = %event, error_code = d.code as u8, script = %d.script_name, message = %d.message, "event failed");
                let mut out = String::new();
                if !d.log.is_empty() {
                    let _ = writeln!(out, "--- last output of {event} ---");
                    out.push_str(&d.log);
                    if !d.log.ends_with('\n') {
                        out.push('\n');
                    }
                    let _ = writeln!(out, "---");
                }
                if !d.script_name.is_empty() {
                    let _ = writeln!(
                        out,
                        "Your local deployment failed while trying to execute your script at {}/{}",
                        layout::archive_dir(&dir).display(),
                        d.script_name.trim_start_matches('/')
                    );
                }
                let _ = writeln!(
                    out,
                    "See the deployment log at {} for more details",
                    layout::scripts_log(&dir).display()
                );
                print!("{out}");
                return Err(LocalError::Failed);
            }
        }
    }
    // The official tool's last line, which scripts look for; then ours.
    println!("AppSpec file valid. Local deployment successful");
    println!("Successfully deployed your bundle locally");
    Ok(dir)
}

/// An appspec named with `-A` must be in the unpacked archive bundle: the
/// official tool fails then (its hooks look for that name only) instead of
/// falling back to `appspec.yml`.
fn named_appspec_present(
    o: &Options,
    command: &HostCommand,
    dir: &Path,
) -> Result<(), Diagnostics> {
    let Some(name) = &o.appspec_filename else {
        return Ok(());
    };
    let archive = layout::archive_dir(dir);
    if *command != HostCommand::DownloadBundle || archive.join(name).is_file() {
        return Ok(());
    }
    Err(Diagnostics::unknown(format!(
        "The CodeDeploy agent did not find an AppSpec file within the unpacked revision directory at revision-relative path \"{name}\". The revision was unpacked to directory \"{}\"",
        archive.display()
    )))
}

/// Local deployments run without AWS, so a `loadBalancer` section is not
/// acted on; say where a fleet deployment would drain and restore.
fn note_load_balancer(d: &crate::command::Deployment) {
    let archive = layout::archive_dir(&d.dir);
    let Ok(loaded) = d.appspecs.get(&archive, &d.spec.appspec_filename) else {
        return;
    };
    let events = d.spec.all_possible_events.clone().unwrap_or_default();
    let drain_at = hooks_builtin::drain_event(&events);
    if hooks_builtin::forces_command(&drain_at, loaded.spec.load_balancer.as_ref(), &events) {
        println!(
            "note: loadBalancer is not acted on by local deployments (no AWS here); a CodeDeploy deployment drains before {drain_at} and restores after ValidateService"
        );
    }
}

pub fn default_options() -> Options {
    Options {
        bundle_location: ".".into(),
        bundle_type: "directory".into(),
        file_exists_behavior: "DISALLOW".into(),
        deployment_group: "default-local-deployment-group".into(),
        deployment_group_name: "LocalFleet".into(),
        application_name: None,
        events: None,
        appspec_filename: None,
    }
}

/// `s3://bucket/key[?versionId=V][&etag=E]`, for tar, tgz or zip bundles.
fn parse_s3_location(
    loc: &str,
    rest: &str,
    bundle_type: BundleType,
) -> Result<RevisionSource, LocalError> {
    if bundle_type == BundleType::Directory {
        return Err(invalid(format!(
            "location {loc} is in S3: the type must be tgz, tar or zip"
        )));
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, key) = path
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| invalid(format!("location {loc} must be s3://bucket/key")))?;
    let mut version = None;
    let mut etag = None;
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("versionId", v)) => version = Some(v.to_string()),
            Some(("etag", v)) => etag = Some(v.to_string()),
            _ => {
                return Err(invalid(format!(
                    "location {loc}: unknown parameter {kv:?} (versionId and etag are known)"
                )))
            }
        }
    }
    Ok(RevisionSource::S3 {
        bucket: bucket.to_string(),
        key: key.to_string(),
        version,
        etag,
        bundle_type,
    })
}

fn local_revision(
    o: &Options,
    loc: &str,
    bundle_type: BundleType,
    cwd: &Path,
) -> Result<RevisionSource, LocalError> {
    let path = crate::fsutil::expand_path(Path::new(loc), cwd);
    let md = std::fs::metadata(&path).map_err(|_| {
        invalid(format!(
            "location {loc} is specified as a file or directory which does not exist"
        ))
    })?;
    let revision = match bundle_type {
        BundleType::Directory => {
            if md.is_file() {
                return Err(invalid(format!(
                    "location {loc} is specified with type directory but it is a file"
                )));
            }
            match &o.appspec_filename {
                Some(name) if !path.join(name).is_file() => {
                    return Err(invalid(format!(
                        "Expecting appspec file at location {}/{name} but it is not found there. Please either run the CLI from within a directory containing the {name} file or specify a bundle location containing an {name} file in its root directory",
                        path.display(),
                    )));
                }
                None if !appspec::DEFAULT_NAMES
                    .iter()
                    .any(|n| path.join(n).is_file()) =>
                {
                    let p = path.display();
                    return Err(invalid(format!(
                        "Expecting appspec file at location {p}/appspec.yml or {p}/appspec.yaml but it is not found there. Please either run the CLI from within a directory containing the appspec.yml or appspec.yaml file or specify a bundle location containing an appspec.yml or appspec.yaml file in its root directory"
                    )));
                }
                _ => {}
            }
            RevisionSource::LocalDirectory { location: path }
        }
        t => {
            if md.is_dir() {
                return Err(invalid(format!(
                    "location {loc} is specified as a compressed local file but it is a directory"
                )));
            }
            RevisionSource::LocalFile {
                location: path,
                bundle_type: t,
            }
        }
    };
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_like_the_official_cli() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bundle.tgz"), "x").unwrap();
        let base = Options {
            bundle_location: d.path().display().to_string(),
            ..default_options()
        };
        let err = |o: &Options| match build_spec(o, d.path(), "ongoing-deployment") {
            Err(LocalError::Invalid(m)) => m,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert!(err(&base).contains("Expecting appspec file"));
        std::fs::write(d.path().join("appspec.yml"), "version: 0.0\nos: linux\n").unwrap();
        let (spec, seq) = build_spec(&base, d.path(), "ongoing-deployment").unwrap();
        assert_eq!(seq.len(), 11);
        assert!(
            spec.deployment_id.starts_with("d-")
                && spec.deployment_id.ends_with("-local")
                && spec.deployment_id.len() == 17
        );
        assert_eq!(spec.deployment_group_id, "default-local-deployment-group");
        assert_eq!(spec.application_name, base.bundle_location);
        let file = Options {
            bundle_location: "bundle.tgz".into(),
            ..default_options()
        };
        assert!(err(&file).contains("type directory but it is a file"));
        let dir_as_tgz = Options {
            bundle_type: "tgz".into(),
            ..base.clone()
        };
        assert!(err(&dir_as_tgz).contains("compressed local file but it is a directory"));
        assert!(err(&Options {
            bundle_type: "rar".into(),
            ..base.clone()
        })
        .contains("not a valid type"));
        assert!(err(&Options {
            bundle_location: "http://x/y".into(),
            ..base.clone()
        })
        .contains("only encrypted"));
        assert!(err(&Options {
            deployment_group: "../etc".into(),
            ..base.clone()
        })
        .contains("single directory name"));
        assert!(err(&Options {
            events: Some(vec!["ApplicationStart".into(), "DownloadBundle".into()]),
            ..base.clone()
        })
        .contains("before DownloadBundle"));
    }
}
