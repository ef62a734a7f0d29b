//! DownloadBundle: bring the revision to the deployment directory (fetched,
//! reused from an earlier deployment, or moved into place when the
//! deployment's first command fetched it early) and unpack it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::diagnostics::Diagnostics;
use crate::layout;
use crate::revision::{self, progress::Growing, progress::Progress};
use crate::spec::{BundleType, RevisionSource};

use super::{Deployment, Executor, Report};

const BUNDLE_DOWNLOADED: &str = "downloaded";
const BUNDLE_REUSED: &str = "archive-reuse";

pub(super) fn run(x: &Executor, d: &Deployment) -> Result<Report, Diagnostics> {
    let (spec, dir) = (&d.spec, d.dir.as_path());
    let group = &spec.deployment_group_id;
    let last = layout::read_pointer(&x.layout.last_successful_pointer(group))
        .ok()
        .flatten();
    let pruned = layout::prune(
        &x.layout.group_dir(group),
        dir,
        last.as_deref(),
        x.config.max_revisions,
    )
    .map_err(|e| Diagnostics::unknown(format!("cannot remove old revisions: {e}")))?;
    let archive = layout::archive_dir(dir);
    d.appspecs.forget(&archive);
    let early = layout::prefetched_dir(dir);
    let mut summary = if early.is_dir() {
        // Fetched and unpacked by the deployment's first command.
        crate::fsutil::remove_tree(&archive)
            .and_then(|_| fs::rename(&early, &archive))
            .map_err(|e| {
                Diagnostics::unknown(format!(
                    "cannot move the prefetched revision into place: {e}"
                ))
            })?;
        "revision fetched and unpacked by the deployment's first command".to_string()
    } else {
        fetch_to_archive(x, d, &archive)?
    };
    layout::write_pointer(&x.layout.most_recent_pointer(group), dir).map_err(|e| {
        Diagnostics::unknown(format!("cannot record the most recent deployment: {e}"))
    })?;
    if !pruned.is_empty() {
        summary.push_str(&format!("; removed {} old revision(s)", pruned.len()));
    }
    let source = fs::read_to_string(layout::bundle_source_file(dir))
        .unwrap_or_else(|_| BUNDLE_DOWNLOADED.to_string());
    Ok(Report {
        completion: Some(format!("Succeeded: BundleSource={}", source.trim())),
        ..Report::done(summary)
    })
}

fn fetch_to_archive(x: &Executor, d: &Deployment, archive: &Path) -> Result<String, Diagnostics> {
    let t0 = Instant::now();
    let (stats, fetched) = fetch_and_unpack(x, d, archive)?;
    tracing::info!(deployment = %d.spec.deployment_id, files = stats.files, dirs = stats.dirs, bytes = stats.bytes, elapsed_ms = t0.elapsed().as_millis() as u64, "bundle unpacked");
    let mut s = format!(
        "{}, {}{} ({}) from a {} bundle",
        count(stats.files, "file"),
        count(stats.dirs, "directory"),
        if stats.symlinks > 0 {
            format!(", {}", count(stats.symlinks, "symlink"))
        } else {
            String::new()
        },
        human_bytes(stats.bytes),
        d.spec.revision.bundle_type().as_str()
    );
    if !fetched.is_empty() {
        s.push_str(&format!("; {fetched}"));
    }
    Ok(s)
}

/// Fetch and unpack the revision beside the deployment archive, for the
/// deployment's first command (kept if an earlier attempt already did).
pub(super) fn prefetch(x: &Executor, d: &Deployment) -> Result<PathBuf, Diagnostics> {
    let target = layout::prefetched_dir(&d.dir);
    if !target.is_dir() {
        let (stats, fetched) = fetch_and_unpack(x, d, &target)?;
        tracing::info!(deployment = %d.spec.deployment_id, files = stats.files, bytes = stats.bytes, fetched = %fetched, "revision fetched early for its loadBalancer section");
    }
    Ok(target)
}

/// Bring the revision to a file (or find it) and unpack it as `target`.
fn fetch_and_unpack(
    x: &Executor,
    d: &Deployment,
    target: &Path,
) -> Result<(revision::Stats, String), Diagnostics> {
    let (spec, dir) = (&d.spec, d.dir.as_path());
    let staging = layout::staging_dir(dir);
    let _ = crate::fsutil::remove_tree(&staging);
    let names = appspec::candidates(&spec.appspec_filename);
    let (fetched, unpacked) = match &spec.revision {
        RevisionSource::LocalFile { location, .. } => {
            let link = layout::bundle_file(dir);
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(location, &link).map_err(|e| {
                Diagnostics::unknown(format!(
                    "cannot link {} to {}: {e}",
                    link.display(),
                    location.display()
                ))
            })?;
            // Read through the user's own path, so errors name the file
            // they gave, not the link to it.
            (String::new(), unpack_file(x, d, location, &staging))
        }
        RevisionSource::LocalDirectory { location } => {
            (String::new(), unpack_file(x, d, location, &staging))
        }
        remote @ (RevisionSource::S3 { .. } | RevisionSource::GitHub { .. }) => {
            let bundle = layout::bundle_file(dir);
            let _ = fs::remove_file(&bundle);
            match reuse_bundle(x, d, &bundle) {
                Some(from) => (
                    format!("reused the bundle of {from}"),
                    unpack_file(x, d, &bundle, &staging),
                ),
                None => download_and_unpack(x, d, remote, &bundle, &staging)?,
            }
        }
    };
    let source_kind = if fetched.starts_with("reused") {
        BUNDLE_REUSED
    } else {
        BUNDLE_DOWNLOADED
    };
    let _ = fs::write(layout::bundle_source_file(dir), source_kind);
    match unpacked
        .and_then(|stats| revision::install_archive(&staging, target, &names).map(|_| stats))
    {
        Ok(s) => Ok((s, fetched)),
        Err(e) => {
            let _ = crate::fsutil::remove_tree(&staging);
            Err(Diagnostics::unknown(format!("{e}")))
        }
    }
}

fn unpack_file(
    x: &Executor,
    d: &Deployment,
    source: &Path,
    staging: &Path,
) -> Result<revision::Stats, revision::RevisionError> {
    revision::unpack(
        d.spec.revision.bundle_type(),
        source,
        staging,
        !x.config.ignore_ownership_in_bundle,
        x.config.revision_limits,
    )
}

/// Download `remote` to `bundle` and unpack it into `staging`: a tar or
/// tgz from a fetcher that reports its progress while the bytes arrive
/// (the download on a thread of its own, the unpack reading behind it), any
/// other once it is whole. A failed download fails the command, whatever
/// the unpack made of the bytes it saw.
fn download_and_unpack(
    x: &Executor,
    d: &Deployment,
    remote: &RevisionSource,
    bundle: &Path,
    staging: &Path,
) -> Result<(String, Result<revision::Stats, revision::RevisionError>), Diagnostics> {
    let fetcher = x.fetcher.ok_or_else(|| {
        Diagnostics::unknown("this command cannot download S3 or GitHub revisions")
    })?;
    let failed = |e: String| {
        let _ = fs::remove_file(bundle);
        Diagnostics::unknown(e)
    };
    let kind = d.spec.revision.bundle_type();
    let tar = matches!(kind, BundleType::Tar | BundleType::Tgz);
    if !(tar && fetcher.streams(remote)) {
        let fetched = fetcher.fetch(remote, bundle, None).map_err(failed)?;
        return Ok((fetched, unpack_file(x, d, bundle, staging)));
    }
    let progress = Arc::new(Progress::default());
    let (fetched, unpacked) = std::thread::scope(|s| {
        let p = progress.clone();
        let download = s.spawn(move || {
            // The unpack waits on `finish`: it is told even of a panic.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fetcher.fetch(remote, bundle, Some(p.clone()))
            }))
            .unwrap_or_else(|_| Err("the download thread panicked".into()));
            p.finish(r.as_ref().map(|_| ()).map_err(Clone::clone));
            r
        });
        let unpacked = revision::unpack_reader(
            kind,
            Growing::new(bundle, &progress),
            bundle,
            staging,
            !x.config.ignore_ownership_in_bundle,
            x.config.revision_limits,
        );
        if unpacked.is_err() && !progress.tainted() {
            progress.cancel();
        }
        let fetched = download
            .join()
            .unwrap_or_else(|_| Err("the download thread panicked".into()));
        (fetched, unpacked)
    });
    match fetched {
        // Bytes the unpack had read were fetched again: unpack the whole,
        // checked file afresh.
        Ok(f) if progress.tainted() => {
            let _ = crate::fsutil::remove_tree(staging);
            tracing::warn!(deployment = %d.spec.deployment_id, "bytes unpacked while downloading were fetched again; unpacking the whole bundle afresh");
            Ok((
                format!("{f}; unpacked again once whole"),
                unpack_file(x, d, bundle, staging),
            ))
        }
        Ok(f) => Ok((format!("{f}; unpacked while downloading"), unpacked)),
        // The unpack stopped first (a refused entry, a full disk ...): its
        // error is the one to report; the download it cancelled is partial.
        Err(_) if unpacked.is_err() && !progress.failed_first() => {
            let _ = fs::remove_file(bundle);
            Ok((String::new(), unpacked))
        }
        Err(e) => {
            let _ = crate::fsutil::remove_tree(staging);
            Err(failed(e))
        }
    }
}

/// RESTART deployments name an earlier deployment whose bundle may be
/// reused. Only a bundle that is on disk and intact is: a regular file
/// (never a link), and, when the revision's ETag is an MD5, with those
/// bytes. Anything else means downloading, never failing.
fn reuse_bundle(x: &Executor, d: &Deployment, dest: &Path) -> Option<String> {
    let spec = &d.spec;
    let from = spec.reuse_archive_from.as_deref()?;
    let valid = from.len() <= 64
        && from.strip_prefix("d-").is_some_and(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        });
    if !valid || from == spec.deployment_id {
        tracing::warn!(
            from,
            "not reusing an archive: not a deployment id of another deployment"
        );
        return None;
    }
    let src = layout::bundle_file(&x.layout.deployment_dir(&spec.deployment_group_id, from));
    let meta = fs::symlink_metadata(&src).ok()?;
    if !meta.file_type().is_file() {
        tracing::info!(from, "no reusable bundle on disk; downloading");
        return None;
    }
    if let RevisionSource::S3 { etag: Some(e), .. } = &spec.revision {
        let e = revision::fetch::normalize_etag(e);
        if e.len() == 32 && revision::fetch::md5_file(&src).ok().as_deref() != Some(e.as_str()) {
            tracing::warn!(
                from,
                "the earlier bundle does not match the revision's ETag; downloading"
            );
            return None;
        }
    }
    // A hard link keeps the bytes when retention removes the source.
    if fs::hard_link(&src, dest).is_err() && fs::copy(&src, dest).is_err() {
        let _ = fs::remove_file(dest);
        return None;
    }
    Some(from.to_string())
}

/// `n` things, in words.
pub(super) fn count(n: impl Into<u64>, what: &str) -> String {
    let n = n.into();
    match (n, what) {
        (1, _) => format!("1 {what}"),
        (_, "directory") => format!("{n} directories"),
        _ => format!("{n} {what}s"),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 10_000_000 => format!("{} MB", b / 1_000_000),
        b if b >= 10_000 => format!("{} kB", b / 1_000),
        b => format!("{b} bytes"),
    }
}
