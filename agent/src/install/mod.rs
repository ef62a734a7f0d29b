//! The Install command: remove the previous deployment's files, then put
//! this revision's files in place with their permissions.
//!
//! Order of work, so that bad input never changes the host:
//! 1. list the revision, read the previous cleanup file;
//! 2. plan against the host as it will be once the previous files are gone,
//!    and resolve every user and group named; any error stops here;
//! 3. remove the previous files;
//! 4. plan again against the real host (if step 3 removed anything) and
//!    apply the plan (see `apply`).

pub mod acl;
pub mod apply;
pub mod archive_tree;
mod copy;
pub mod keep;
pub mod ledger;
pub mod listed;
mod paths;
pub mod plan;
pub mod selinux;
pub mod space;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use appspec::permissions::AclTag;
use appspec::{AppSpec, FileExistsBehavior};

use crate::layout::Layout;
use crate::users;
use apply::{Applier, ApplyReport, Ids};
use archive_tree::ArchiveTree;
use listed::Listed;
use plan::{Counts, Existing, PlanError};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{}", render_plan_errors(.file, .errors))]
    Plan {
        file: String,
        errors: Vec<PlanError>,
    },
    #[error("{0}")]
    Lookup(String),
    /// A destination filesystem cannot take the new revision.
    #[error("{0}")]
    Space(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("install failed and was rolled back: {0}")]
    Apply(#[from] apply::ApplyError),
}

fn render_plan_errors(file: &str, errors: &[PlanError]) -> String {
    errors
        .iter()
        .map(|e| {
            format!(
                "{file}:{}:{}: {}: {}",
                e.pos.line, e.pos.column, e.field, e.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> InstallError {
    let context = context.into();
    move |source| InstallError::Io { context, source }
}

pub struct Request<'a> {
    pub layout: &'a Layout,
    pub group: &'a str,
    pub archive_dir: &'a Path,
    pub spec: &'a AppSpec,
    /// The appspec file name, for messages.
    pub appspec_file: &'a str,
    pub behavior: FileExistsBehavior,
    /// Relative destinations resolve against this (the agent's cwd).
    pub cwd: PathBuf,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub counts: Counts,
    pub applied: ApplyReport,
    pub previous_removed: usize,
    pub previous_kept_dirs: Vec<PathBuf>,
    pub previous_unsafe_skipped: usize,
    pub cleanup_time: Duration,
    pub copy_time: Duration,
}

/// What a path is on the host; symlinks to directories count as directories
/// (the official agent installs through them).
pub fn probe_host(p: &Path) -> Existing {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Existing::Missing,
        Err(_) => Existing::NonDir,
        Ok(m) if m.is_dir() => Existing::Dir,
        Ok(m) if m.file_type().is_symlink() => match fs::metadata(p) {
            Ok(t) if t.is_dir() => Existing::Dir,
            _ => Existing::NonDir,
        },
        Ok(_) => Existing::NonDir,
    }
}

pub fn install(req: &Request) -> Result<Outcome, InstallError> {
    let cleanup_path = req.layout.cleanup_file(req.group);
    // Two reads of a size with the revision (a directory tree, a file of
    // paths), each on one core: side by side.
    let (archive, previous) = std::thread::scope(|s| {
        let previous = s.spawn(|| Listed::read(&cleanup_path));
        let archive = ArchiveTree::walk(req.archive_dir);
        let previous = previous
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (archive, previous)
    });
    let archive = archive.map_err(io_err(format!("cannot list {}", req.archive_dir.display())))?;
    let previous = previous.map_err(io_err(format!("cannot read {}", cleanup_path.display())))?;
    let threads = crate::fsutil::workers();
    let plan_err = |errors| InstallError::Plan {
        file: req.appspec_file.to_string(),
        errors,
    };

    // 2. Check everything before touching anything: the plan against the
    // host as it will be, and room for the new files beside the old ones.
    let mut finder = listed::Finder::default();
    let mut probe = |p: &Path| match &previous {
        Some(l) if l.lists(p, &mut finder) => Existing::Ledger,
        _ => probe_host(p),
    };
    let ahead =
        plan::plan(req.spec, &archive, req.behavior, &req.cwd, &mut probe).map_err(plan_err)?;
    space::check(&ahead, &archive).map_err(InstallError::Space)?;
    // With nothing listed by a previous revision nothing is removed before
    // the copy, so the host the plan saw is the host it is applied to: no
    // second plan (and no second probe of every destination path).
    let ahead = previous
        .as_ref()
        .is_none_or(Listed::is_empty)
        .then_some(ahead);
    let ids = resolve_ids(req.spec, req.appspec_file)?;
    let selinux_on = selinux::enabled();

    // 3. Keep the previous deployment's files (hard links), then remove them.
    let mut outcome = Outcome::default();
    let t0 = Instant::now();
    // The previous file stays on disk for a rollback, not in memory; a
    // second name a crash left behind is not it.
    let previous_file = match &previous {
        Some(l) => {
            let aside = req.layout.previous_cleanup_file(req.group);
            Some(
                ledger::Previous::claim(&cleanup_path, &aside, l.bytes())
                    .map_err(io_err(format!("cannot remove {}", aside.display())))?,
            )
        }
        None => None,
    };
    let mut previous = previous;
    let kept = match previous.as_mut() {
        Some(listed) => Some(
            keep::keep(listed, &cleanup_path)
                .map_err(io_err("cannot keep the previous deployment's files"))?,
        ),
        _ => None,
    };
    let replaced = replace(
        req,
        &archive,
        ahead,
        previous,
        &ids,
        Workers {
            threads,
            selinux: selinux_on,
        },
        kept.as_ref().zip(previous_file.as_ref()),
        &mut outcome,
        t0,
    );
    let (json, cleanup) = match replaced {
        Ok(w) => w,
        Err(e) => {
            // Put the previous revision back, as it was.
            if let (Some(k), Some(prev)) = (kept, &previous_file) {
                match k.restore(prev) {
                    Ok(n) => tracing::warn!(
                        restored = n,
                        "install failed; the previous revision's files are back"
                    ),
                    Err(r) => {
                        tracing::error!(error = %r, "install failed, and putting the previous revision back failed too")
                    }
                }
            }
            return Err(e);
        }
    };
    let t1 = Instant::now();
    json.finish().map_err(io_err("cannot write install.json"))?;
    cleanup
        .finish()
        .map_err(io_err(format!("cannot write {}", cleanup_path.display())))?;
    // Only a rollback needed the previous cleanup file.
    if let Some(prev) = &previous_file {
        prev.release();
    }
    let mut gone = outcome.applied.temporaries.clone();
    if let Some(k) = kept {
        gone.extend(k.listed().map(Path::to_path_buf));
        k.release();
    }
    if !gone.is_empty() {
        ledger::forget(&cleanup_path, &gone)
            .map_err(io_err(format!("cannot write {}", cleanup_path.display())))?;
    }
    outcome.copy_time += t1.elapsed();
    Ok(outcome)
}

#[derive(Clone, Copy)]
struct Workers {
    threads: usize,
    selinux: bool,
}

/// Steps 3 and 4: remove the previous files, plan against the host as it is
/// then, and apply. Returns the record writers to finish; an error here is
/// undone by the caller (the previous revision is put back).
#[allow(clippy::too_many_arguments)]
fn replace<'a>(
    req: &'a Request,
    archive: &'a ArchiveTree,
    planned: Option<plan::InstallPlan<'a>>,
    previous: Option<Listed>,
    ids: &Ids,
    w: Workers,
    kept: Option<(&keep::Kept, &ledger::Previous)>,
    outcome: &mut Outcome,
    t0: Instant,
) -> Result<(ledger::InstructionsWriter, ledger::Writer), InstallError> {
    let cleanup_path = req.layout.cleanup_file(req.group);
    if let Some(listed) = previous {
        let rep = ledger::replay(&listed, w.threads)
            .map_err(io_err("cannot remove the previous deployment's files"))?;
        if w.selinux {
            for c in &rep.contexts {
                selinux::remove(c);
            }
        }
        if !rep.unsafe_skipped.is_empty() {
            tracing::warn!(count = rep.unsafe_skipped.len(), first = %rep.unsafe_skipped[0].display(), "left previous files below a directory that became a symlink");
        }
        if !rep.kept_dirs.is_empty() {
            tracing::info!(count = rep.kept_dirs.len(), first = %rep.kept_dirs[0].display(), "kept directories that hold files not installed by CodeDeploy");
        }
        outcome.previous_removed = rep.removed + rep.moved;
        outcome.previous_unsafe_skipped = rep.unsafe_skipped.len();
        outcome.previous_kept_dirs = rep.kept_dirs;
    }
    outcome.cleanup_time = t0.elapsed();

    // 4. Plan against the host as it is now, and apply.
    let t1 = Instant::now();
    let plan_err = |errors| InstallError::Plan {
        file: req.appspec_file.to_string(),
        errors,
    };
    let plan = match planned {
        Some(p) => p,
        None => plan::plan(req.spec, archive, req.behavior, &req.cwd, &mut probe_host)
            .map_err(plan_err)?,
    };
    outcome.counts = plan.counts();
    fs::create_dir_all(req.layout.instructions_dir())
        .map_err(io_err("cannot create deployment-instructions"))?;
    let mut json = ledger::InstructionsWriter::create(&req.layout.install_json(req.group))
        .map_err(io_err("cannot write install.json"))?;
    // The backups stay listed until they are gone, whatever happens next.
    let mut cleanup = match kept {
        Some((k, prev)) => prev.start_new(k.listed()),
        None => ledger::Writer::create(&cleanup_path),
    }
    .map_err(io_err(format!("cannot create {}", cleanup_path.display())))?;
    let applier = Applier {
        plan: &plan,
        archive,
        ids,
        threads: w.threads,
        as_root: crate::sys::is_root(),
        selinux: w.selinux,
    };
    outcome.applied = applier.run(&mut cleanup, &mut json)?;
    let placed = outcome.applied.files + outcome.applied.replaced;
    crate::metrics::get().installed(placed as u64);
    outcome.copy_time = t1.elapsed();
    Ok((json, cleanup))
}

/// Every user and group the permissions name, resolved up front.
fn resolve_ids(spec: &AppSpec, file: &str) -> Result<Ids, InstallError> {
    let mut ids = Ids::default();
    let mut errors = Vec::new();
    for p in &spec.permissions {
        let at = format!(
            "{file}:{}:{}: permissions[{}]",
            p.pos.line, p.pos.column, p.index
        );
        let mut users: Vec<&str> = p.owner.iter().map(String::as_str).collect();
        let mut groups: Vec<&str> = p.group.iter().map(String::as_str).collect();
        for e in p
            .acls
            .iter()
            .flat_map(|a| &a.entries)
            .filter(|e| !e.name.is_empty())
        {
            match e.tag {
                AclTag::User => users.push(&e.name),
                AclTag::Group => groups.push(&e.name),
                _ => {}
            }
        }
        for u in users {
            if ids.users.contains_key(u) {
                continue;
            }
            match users::account(u) {
                Ok(a) => {
                    ids.users.insert(u.to_string(), a.uid);
                }
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
        for g in groups {
            if ids.groups.contains_key(g) {
                continue;
            }
            match users::group_id(g) {
                Ok(gid) => {
                    ids.groups.insert(g.to_string(), gid);
                }
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
    }
    if errors.is_empty() {
        Ok(ids)
    } else {
        Err(InstallError::Lookup(errors.join("\n")))
    }
}
