//! Revisions: fetch a bundle and unpack it into `deployment-archive`.
//!
//! Unpacking goes to a staging directory next to the archive and is renamed
//! into place only when complete, so a failed or refused bundle leaves no
//! half-written archive. Archives are streamed; nothing holds a bundle in
//! memory.

pub mod fetch;
mod formats;
mod pool;
pub mod progress;
pub mod remote;
pub mod safe_writer;
mod tar_guard;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use formats::{sniff, Sniffed};
use safe_writer::WriteError;
pub use safe_writer::{Limits, Stats};

use crate::fsutil;
use crate::spec::BundleType;

#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error(transparent)]
    Entry(#[from] WriteError),
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{0}")]
    NoAppspec(String),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> RevisionError {
    let context = context.into();
    move |source| RevisionError::Io { context, source }
}

/// Unpack `bundle` (of the declared type) into the fresh directory `staging`.
/// `restore_owners`: give tar entries their recorded owners (when root).
/// `limits` bound what it may unpack to, checked as it unpacks.
pub fn unpack(
    bundle_type: BundleType,
    bundle: &Path,
    staging: &Path,
    restore_owners: bool,
    limits: Limits,
) -> Result<Stats, RevisionError> {
    fs::create_dir(staging).map_err(io_err(format!("cannot create {}", staging.display())))?;
    if bundle_type == BundleType::Directory {
        return formats::copy_directory(bundle, staging, limits);
    }
    let found =
        sniff(bundle).map_err(io_err(format!("cannot read bundle {}", bundle.display())))?;
    match archive_kind(bundle_type, found, bundle)? {
        Archive::Zip => formats::unzip(bundle, staging, limits),
        Archive::Tar { gzip } => formats::untar(bundle, staging, gzip, restore_owners, limits),
    }
}

/// Unpack the tar or tgz bundle `reader` reads (a download under way,
/// `progress::Growing`) into the fresh directory `staging`; errors name
/// `bundle`. A zip is never read this way: its directory is at its end.
pub fn unpack_reader(
    bundle_type: BundleType,
    mut reader: impl Read + Send,
    bundle: &Path,
    staging: &Path,
    restore_owners: bool,
    limits: Limits,
) -> Result<Stats, RevisionError> {
    fs::create_dir(staging).map_err(io_err(format!("cannot create {}", staging.display())))?;
    let mut head = [0u8; formats::SNIFF_BYTES];
    let n = formats::read_full(&mut reader, &mut head)
        .map_err(io_err(format!("cannot read bundle {}", bundle.display())))?;
    let found = formats::sniff_bytes(&head[..n]);
    match archive_kind(bundle_type, found, bundle)? {
        Archive::Zip => Err(RevisionError::Format {
            path: bundle.into(),
            message: "a zip archive cannot be unpacked while it downloads".into(),
        }),
        Archive::Tar { gzip } => {
            let whole = io::Cursor::new(head[..n].to_vec()).chain(reader);
            formats::untar_from(whole, bundle, staging, gzip, restore_owners, limits)
        }
    }
}

enum Archive {
    Zip,
    Tar { gzip: bool },
}

/// What to read `bundle` as, declared `declared` and found to be `found`.
fn archive_kind(
    declared: BundleType,
    found: Sniffed,
    bundle: &Path,
) -> Result<Archive, RevisionError> {
    let refuse = |message: String| RevisionError::Format {
        path: bundle.into(),
        message,
    };
    match (declared, found) {
        (BundleType::Zip, Sniffed::Zip) => Ok(Archive::Zip),
        (BundleType::Zip, other) => Err(refuse(format!(
            "the deployment says zip but the bundle is {}",
            other.describe()
        ))),
        (_, Sniffed::Zip) => Err(refuse(format!(
            "the deployment says {} but the bundle is a zip archive",
            declared.as_str()
        ))),
        // Like GNU tar, read compressed and plain tar whatever the
        // declared tar/tgz says.
        (_, Sniffed::Gzip) => Ok(Archive::Tar { gzip: true }),
        (_, Sniffed::Tar) => Ok(Archive::Tar { gzip: false }),
        (_, Sniffed::Unknown) => Err(refuse(format!(
            "not a {} archive (unrecognised content)",
            declared.as_str()
        ))),
    }
}

/// Turn a complete staging directory into `<deployment>/deployment-archive`.
/// When the revision's content sits in one top-level directory holding the
/// appspec, that directory becomes the archive root (official behaviour);
/// other top-level entries are dropped with a warning.
pub fn install_archive(
    staging: &Path,
    archive: &Path,
    appspec_names: &[&str],
) -> Result<PathBuf, RevisionError> {
    let has_appspec = |dir: &Path| appspec_names.iter().any(|n| dir.join(n).is_file());
    let root = if has_appspec(staging) {
        staging.to_path_buf()
    } else {
        let mut nested = Vec::new();
        let mut others = Vec::new();
        for e in fs::read_dir(staging).map_err(io_err("cannot list the unpacked bundle"))? {
            let e = e.map_err(io_err("cannot list the unpacked bundle"))?;
            let p = e.path();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && has_appspec(&p) {
                nested.push(p);
            } else {
                others.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        match nested.len() {
            1 => {
                if !others.is_empty() {
                    others.sort();
                    tracing::warn!(
                        dropped = %others.iter().take(10).cloned().collect::<Vec<_>>().join(";"),
                        count = others.len(),
                        "entries outside the directory that holds the appspec are not part of the revision"
                    );
                }
                nested.remove(0)
            }
            0 => {
                return Err(RevisionError::NoAppspec(format!(
                    "appspec file is not found: the revision has no {} at its root or in a single top-level directory",
                    appspec_names.join(" or ")
                )))
            }
            _ => {
                return Err(RevisionError::NoAppspec(format!(
                    "the revision has no appspec at its root and several top-level directories with one ({}); cannot tell which is the revision",
                    nested.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy()).collect::<Vec<_>>().join(", ")
                )))
            }
        }
    };
    fsutil::remove_tree(archive).map_err(io_err(format!("cannot remove {}", archive.display())))?;
    fs::rename(&root, archive).map_err(io_err(format!(
        "cannot move the unpacked bundle to {}",
        archive.display()
    )))?;
    if root != staging {
        fsutil::remove_tree(staging).map_err(io_err("cannot remove the staging directory"))?;
    }
    Ok(archive.to_path_buf())
}

/// Read a whole small entry (a symlink target) with a bound.
pub(crate) fn read_small(r: &mut dyn Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.take(limit + 1).read_to_end(&mut v)?;
    if v.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "symlink target too long",
        ));
    }
    Ok(v)
}
