//! Carry out an install plan: directories, then files (in parallel), then
//! replacements, then permissions. Every created path is in the cleanup file
//! before it exists; on failure everything this install created is removed
//! again and replaced files keep their old content.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use appspec::permissions::AclEntry;
use appspec::Permission;

use super::acl;
use super::archive_tree::{AKind, ArchiveTree};
use super::ledger;
use super::paths::PathCursor;
use super::plan::{DKind, InstallPlan};
use super::selinux;
use crate::fsutil;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ApplyError {
    pub path: PathBuf,
    pub message: String,
}

pub(super) fn fail(path: &Path, what: &str, e: impl std::fmt::Display) -> ApplyError {
    ApplyError {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

/// Owner and group ids of the names the permissions use, resolved before
/// anything on the host changes.
#[derive(Debug, Default)]
pub struct Ids {
    pub users: HashMap<String, u32>,
    pub groups: HashMap<String, u32>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub dirs: usize,
    pub files: usize,
    pub replaced: usize,
    pub permissions: usize,
    pub contexts_applied: usize,
    pub contexts_skipped: usize,
    /// Symlinks that had a mode or ACL rule: links have no mode of their own.
    pub links_without_mode: usize,
    /// Replacements' temporary names, listed in the cleanup file in case of
    /// a crash; renamed away now, so they can leave the file.
    pub temporaries: Vec<PathBuf>,
}

pub struct Applier<'p, 'a> {
    pub plan: &'p InstallPlan<'a>,
    pub archive: &'p ArchiveTree,
    pub ids: &'p Ids,
    pub threads: usize,
    pub as_root: bool,
    pub selinux: bool,
}

/// Copy only `s`'s data segments (SEEK_DATA/SEEK_HOLE), leaving its holes
/// as holes in `d`, then give `d` the full length.
pub(super) fn copy_sparse(s: &mut File, d: &mut File, len: u64) -> io::Result<()> {
    use nix::unistd::{lseek, Whence};
    use std::io::{Read, Seek, SeekFrom};
    let mut off: i64 = 0;
    let end = len as i64;
    while off < end {
        let data = match lseek(&*s, off, Whence::SeekData) {
            Ok(o) => o,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole is left
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(&*s, data, Whence::SeekHole).map_err(io::Error::from)?;
        s.seek(SeekFrom::Start(data as u64))?;
        d.seek(SeekFrom::Start(data as u64))?;
        io::copy(&mut (&mut *s).take((hole - data) as u64), d)?;
        off = hole;
    }
    d.set_len(len)
}

/// Where a replacement is written before it is renamed over the original.
fn temp_for(dest: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    name.push(".codedeploy-new");
    dest.with_file_name(name)
}

impl Applier<'_, '_> {
    pub fn run(
        &self,
        ledger: &mut ledger::Writer,
        json: &mut ledger::InstructionsWriter,
    ) -> Result<ApplyReport, ApplyError> {
        let plan = self.plan;
        // Counted first: a million ids are not grown by doubling.
        let c = plan.counts();
        let mut dirs = Vec::with_capacity(c.dirs_created);
        // New files are not listed apart: they are most of the plan's nodes
        // (4 MB of ids at a million), and `new_files` finds them again.
        let files = c.files - c.replaced;
        let mut replaced = Vec::with_capacity(c.replaced);
        let mut with_perm = Vec::with_capacity(c.with_permissions);
        for id in plan.ids() {
            match plan.kind(id) {
                DKind::Create => dirs.push(id),
                DKind::Copy { replace: true, .. } => replaced.push(id),
                DKind::Copy { replace: false, .. } | DKind::Existing | DKind::Keep => {}
            }
            if plan.permission(id).is_some()
                && !matches!(plan.kind(id), DKind::Existing | DKind::Keep)
            {
                with_perm.push(id);
            }
        }
        let ioe = |p: &Path, e: io::Error| fail(p, "cannot write the install records", e);
        // install.json is a record for people: nothing below reads it, so
        // it is written beside the cleanup file and the copy, on the core
        // the single-threaded steps leave idle. It lands (by rename) only
        // once the install has succeeded.
        let mut report = ApplyReport::default();
        std::thread::scope(|s| {
            let instructions = s.spawn(|| self.write_instructions(json));
            let listed = self.list_new(&dirs, &replaced, ledger);
            let applied = listed
                .is_ok()
                .then(|| self.execute(&dirs, files, &replaced, &with_perm, ledger, &mut report));
            let written = instructions
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
                .map_err(|e| ioe(Path::new("install.json"), e));
            match applied {
                // Nothing was created.
                None => listed.and(written),
                Some(r) => {
                    let r = r.and(written);
                    if r.is_err() {
                        self.rollback(&dirs, files, &replaced);
                    }
                    r
                }
            }
        })?;
        report.temporaries = replaced
            .iter()
            .map(|id| temp_for(&plan.path(*id)))
            .collect();
        Ok(report)
    }

    /// List in the cleanup file everything the install is about to create,
    /// before it creates any of it.
    fn list_new(
        &self,
        dirs: &[u32],
        replaced: &[u32],
        ledger: &mut ledger::Writer,
    ) -> Result<(), ApplyError> {
        let plan = self.plan;
        let ioe = |p: &Path, e: io::Error| fail(p, "cannot write the cleanup file", e);
        let mut at = PathCursor::default();
        for id in dirs.iter().copied().chain(self.new_files()) {
            let p = plan.path_in(id, &mut at);
            ledger.path(p).map_err(|e| ioe(p, e))?;
        }
        for id in replaced {
            let t = temp_for(&plan.path(*id));
            ledger.path(&t).map_err(|e| ioe(&t, e))?;
        }
        ledger
            .flush()
            .map_err(|e| ioe(Path::new("cleanup file"), e))
    }

    /// The plan's new files (not replacements), in plan order.
    fn new_files(&self) -> impl Iterator<Item = u32> + '_ {
        self.plan.ids().filter(|&id| self.is_new_file(id))
    }

    fn is_new_file(&self, id: u32) -> bool {
        matches!(self.plan.kind(id), DKind::Copy { replace: false, .. })
    }

    fn execute(
        &self,
        dirs: &[u32],
        files: usize,
        replaced: &[u32],
        with_perm: &[u32],
        ledger: &mut ledger::Writer,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let plan = self.plan;
        for id in dirs {
            let p = plan.path(*id);
            fs::create_dir(&p).map_err(|e| fail(&p, "cannot create directory", e))?;
            report.dirs += 1;
        }
        let defaults = super::copy::Defaults::current();
        fsutil::parallel_fold(
            plan.len(),
            self.threads,
            64,
            || (),
            |_, r| self.copy_chunk(r.start as u32..r.end as u32, &defaults),
        )?;
        report.files += files;
        fsutil::parallel_try(replaced, self.threads, 64, |id| {
            let dest = plan.path(*id);
            let tmp = temp_for(&dest);
            // A leftover of an interrupted install has our name; replace it.
            let _ = fs::remove_file(&tmp);
            self.copy(*id, &tmp, &defaults)
        })?;
        // Every replacement is ready: record the originals as ours, then swap.
        for id in replaced {
            let p = plan.path(*id);
            ledger
                .path(&p)
                .map_err(|e| fail(&p, "cannot write the cleanup file", e))?;
        }
        ledger
            .flush()
            .map_err(|e| fail(Path::new("cleanup file"), "cannot write", e))?;
        for id in replaced {
            let dest = plan.path(*id);
            fs::rename(temp_for(&dest), &dest).map_err(|e| fail(&dest, "cannot replace", e))?;
            report.replaced += 1;
        }
        let links = AtomicUsize::new(0);
        fsutil::parallel_try(with_perm, self.threads, 64, |id| {
            let perm = plan.permission(*id).expect("listed with a permission");
            let path = plan.path(*id);
            let is_link = matches!(plan.kind(*id), DKind::Copy { src, .. } if self.archive.kind(src) == AKind::Symlink);
            if is_link && (perm.mode.is_some() || perm.acls.is_some()) {
                links.fetch_add(1, Ordering::Relaxed);
            }
            self.set_permissions(&path, perm, is_link)
        })?;
        report.permissions = with_perm.len();
        report.links_without_mode = links.into_inner();
        for id in with_perm {
            let Some(ctx) = plan.permission(*id).and_then(|p| p.context.as_ref()) else {
                continue;
            };
            if !self.selinux {
                report.contexts_skipped += 1;
                continue;
            }
            let path = plan.path(*id);
            let real = fs::canonicalize(&path).map_err(|e| fail(&path, "cannot resolve", e))?;
            ledger
                .context(&real)
                .map_err(|e| fail(&path, "cannot write the cleanup file", e))?;
            ledger
                .flush()
                .map_err(|e| fail(&path, "cannot write the cleanup file", e))?;
            selinux::apply(&real, ctx)
                .map_err(|e| fail(&path, "cannot set the SELinux context", e))?;
            report.contexts_applied += 1;
        }
        Ok(())
    }

    /// Copy one revision entry to `dest`, keeping mode, times and (as root)
    /// owner, never following a symlink at the destination.
    pub(super) fn copy(
        &self,
        id: u32,
        dest: &Path,
        def: &super::copy::Defaults,
    ) -> Result<(), ApplyError> {
        let DKind::Copy { src, .. } = self.plan.kind(id) else {
            return Ok(());
        };
        let src_path = self.archive.full_path(src);
        if self.archive.kind(src) == AKind::Symlink {
            let target =
                fs::read_link(&src_path).map_err(|e| fail(&src_path, "cannot read link", e))?;
            std::os::unix::fs::symlink(&target, dest)
                .map_err(|e| fail(dest, "cannot create symlink", e))?;
            if self.as_root {
                let md = fs::symlink_metadata(&src_path)
                    .map_err(|e| fail(&src_path, "cannot stat", e))?;
                std::os::unix::fs::lchown(dest, Some(md.uid()), Some(md.gid()))
                    .map_err(|e| fail(dest, "cannot set owner", e))?;
            }
            return Ok(());
        }
        // A regular file: the same copy as the hot path, from handles on
        // the two directories.
        self.copy_file_to(id, src, dest, def)
    }

    /// Owner first (it clears set-id bits), then mode, then ACL (built from
    /// the final mode). Symlinks only take an owner.
    fn set_permissions(
        &self,
        path: &Path,
        perm: &Permission,
        is_link: bool,
    ) -> Result<(), ApplyError> {
        let missing = |what: &str, n: &str| {
            fail(
                path,
                "cannot set owner",
                format!("{what} {n:?} was not resolved"),
            )
        };
        let uid = match &perm.owner {
            Some(o) => Some(*self.ids.users.get(o).ok_or_else(|| missing("user", o))?),
            None => None,
        };
        let gid = match &perm.group {
            Some(g) => Some(*self.ids.groups.get(g).ok_or_else(|| missing("group", g))?),
            None => None,
        };
        if is_link {
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(path, uid, gid)
                    .map_err(|e| fail(path, "cannot set owner", e))?;
            }
            return Ok(());
        }
        let f: File = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| fail(path, "cannot open", e))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&f, uid, gid)
                .map_err(|e| fail(path, "cannot set owner", e))?;
        }
        if let Some(m) = &perm.mode {
            f.set_permissions(fs::Permissions::from_mode(m.bits))
                .map_err(|e| fail(path, "cannot set mode", e))?;
        }
        if let Some(a) = &perm.acls {
            let mode = f
                .metadata()
                .map_err(|e| fail(path, "cannot stat", e))?
                .mode();
            let ids = self.ids;
            let enc = acl::encode(a, mode, &mut |e: &AclEntry| {
                let map = if e.tag == appspec::permissions::AclTag::Group {
                    &ids.groups
                } else {
                    &ids.users
                };
                map.get(&e.name).copied().ok_or_else(|| {
                    format!(
                        "{} {:?} does not exist on this host",
                        e.tag.as_str(),
                        e.name
                    )
                })
            })
            .map_err(|e| fail(path, "invalid ACL", e))?;
            let acl_err = |e: io::Error| {
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    fail(
                        path,
                        "cannot set ACL",
                        "the filesystem does not support POSIX ACLs",
                    )
                } else {
                    fail(path, "cannot set ACL", e)
                }
            };
            crate::sys::fsetxattr(&f, acl::ACCESS, &enc.access).map_err(acl_err)?;
            if let Some(d) = &enc.default {
                crate::sys::fsetxattr(&f, acl::DEFAULT, d).map_err(acl_err)?;
            }
        }
        Ok(())
    }

    fn write_instructions(&self, json: &mut ledger::InstructionsWriter) -> io::Result<()> {
        let plan = self.plan;
        let mut perms = Vec::new();
        let (mut from, mut to) = (PathCursor::default(), PathCursor::default());
        for id in plan.ids() {
            match plan.kind(id) {
                DKind::Create => json.mkdir(plan.path_in(id, &mut to))?,
                DKind::Copy { src, .. } => json.copy(
                    self.archive.full_path_in(src, &mut from),
                    plan.path_in(id, &mut to),
                )?,
                DKind::Existing | DKind::Keep => {}
            }
            if plan.permission(id).is_some()
                && !matches!(plan.kind(id), DKind::Existing | DKind::Keep)
            {
                perms.push(id);
            }
        }
        for id in perms {
            let p = plan.permission(id).expect("filtered");
            let path = plan.path(id);
            if p.owner.is_some() || p.group.is_some() {
                json.chown(&path, p.owner.as_deref(), p.group.as_deref())?;
            }
            if let Some(m) = &p.mode {
                json.chmod(&path, &m.text)?;
            }
            if let Some(a) = &p.acls {
                let entries: Vec<String> = a.entries.iter().map(|e| e.to_string()).collect();
                json.setfacl(&path, &entries)?;
            }
            if let Some(c) = &p.context {
                let range = c.range.as_ref().map(|r| r.to_string());
                json.semanage(&path, c.user.as_deref(), &c.type_, range.as_deref())?;
            }
        }
        Ok(())
    }

    /// Undo this install: temporary replacements, copied files, created
    /// directories (deepest first). Best effort; what cannot be removed is
    /// still in the cleanup file for the next deployment.
    fn rollback(&self, dirs: &[u32], files: usize, replaced: &[u32]) {
        let plan = self.plan;
        for id in replaced {
            let _ = fs::remove_file(temp_for(&plan.path(*id)));
        }
        let _ = fsutil::parallel_fold(
            plan.len(),
            self.threads,
            256,
            || (),
            |_, r| {
                for id in (r.start as u32..r.end as u32).filter(|&id| self.is_new_file(id)) {
                    let _ = fs::remove_file(plan.path(id));
                }
                Ok::<(), ()>(())
            },
        );
        for id in dirs.iter().rev() {
            let _ = fs::remove_dir(plan.path(*id));
        }
        tracing::warn!(
            dirs = dirs.len(),
            files,
            "install failed; removed what it had created"
        );
    }
}
