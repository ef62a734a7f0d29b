//! Writes archive entries under one root and nowhere else.
//!
//! Every format (tar, zip, a local directory) feeds entries through this one
//! writer, so the rules are in one place:
//! - names are relative, without `..`; absolute names are refused;
//! - nothing is written through a symlink: no entry may sit below one, and
//!   files are opened with `O_NOFOLLOW | O_EXCL`;
//! - a symlink's target must stay inside the root. `..` is allowed only at
//!   the start of the target, where it is resolved against real directories
//!   this writer created, so a chain of links cannot climb out;
//! - hard links must name a regular file already written;
//! - devices, FIFOs and sockets are refused.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::pool::{self, Pool};
use crate::users::IdCache;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("archive entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: String },
    #[error("cannot write archive entry {entry:?}: {source}")]
    Io { entry: String, source: io::Error },
}

/// Metadata an archive carries for an entry.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// Permission bits (including set-id bits); `None` uses a default.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub uname: Option<String>,
    pub gname: Option<String>,
    pub mtime: Option<SystemTime>,
    /// The content size the archive declares, if it does: a small file's
    /// buffer is taken at that size, not grown to it.
    pub size: Option<u64>,
}

/// Bounds on what one bundle may unpack to, checked while it unpacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of file content, holes included (`:revision_max_bytes:`).
    pub max_bytes: u64,
    /// Files, directories and links (`:revision_max_entries:`).
    pub max_entries: u64,
}

impl Default for Limits {
    /// Far above any honest bundle (README, "Hostile input").
    fn default() -> Limits {
        Limits {
            max_bytes: 64 << 30,
            max_entries: 10_000_000,
        }
    }
}

/// Local files from this size on are copied by the kernel, in chunks of
/// `COPY_RANGE_CHUNK` so the bounds are checked as they grow.
const COPY_RANGE_FROM: u64 = 256 << 10;
const COPY_RANGE_CHUNK: u64 = 16 << 20;

/// Written bytes between two looks at the filesystem's free space.
const SPACE_CHECK_EVERY: u64 = 64 << 20;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes: u64,
}

struct DirMeta {
    rel: PathBuf,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: Option<SystemTime>,
}

pub struct SafeWriter {
    root: PathBuf,
    /// Directories known to exist (relative; "" is the root).
    dirs: HashSet<PathBuf>,
    /// Symlinks written so far: nothing may be written below them.
    symlinks: HashSet<PathBuf>,
    dir_meta: Vec<DirMeta>,
    /// Apply archive ownership and set-id bits, as tar does for root.
    as_root: bool,
    apply_owner: bool,
    umask: u32,
    ids: IdCache,
    stats: Stats,
    buf: Vec<u8>,
    limits: Limits,
    /// Bytes really written (holes excluded) since free space was checked.
    unchecked: u64,
    /// Writers for small files (none on one core), and the names handed
    /// to them since they were last waited for, as hashes: a collision only
    /// waits for the pool when it need not (4096 names in 32 kB, not 300).
    pool: Option<Pool>,
    batch: Vec<pool::Job>,
    batch_bytes: u64,
    inflight: HashSet<u64>,
    inflight_keys: std::hash::RandomState,
    /// Who owns a file this process creates here without a chown.
    default_owner: Option<(u32, u32)>,
}

/// Files up to this size are read whole and written by the pool.
const POOLED_MAX: u64 = 64 << 10;
/// Names remembered before the pool is waited for (bounds the set).
const INFLIGHT_MAX: usize = 4096;

impl SafeWriter {
    /// `root` must exist and be empty. `apply_owner`: restore the archive's
    /// owners (tar does this when run by root; zip and directories do not).
    pub fn new(root: &Path, apply_owner: bool, limits: Limits) -> SafeWriter {
        let as_root = crate::sys::is_root();
        let threads = crate::fsutil::workers();
        let setgid_root = fs::metadata(root)
            .map(|m| std::os::unix::fs::MetadataExt::mode(&m) & libc::S_ISGID != 0)
            .unwrap_or(true);
        let default_owner = (!setgid_root).then(|| {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        });
        let mut dirs = HashSet::new();
        dirs.insert(PathBuf::new());
        SafeWriter {
            root: root.to_path_buf(),
            dirs,
            symlinks: HashSet::new(),
            dir_meta: Vec::new(),
            as_root,
            apply_owner: apply_owner && as_root,
            umask: crate::sys::current_umask(),
            ids: IdCache::default(),
            stats: Stats::default(),
            buf: vec![0; 128 * 1024],
            limits,
            unchecked: 0,
            pool: (threads > 1).then(|| Pool::new(threads)),
            batch: Vec::new(),
            batch_bytes: 0,
            inflight: HashSet::new(),
            inflight_keys: std::hash::RandomState::new(),
            default_owner,
        }
    }

    /// Wait for the pool if it may still be writing `rel`, so what follows
    /// sees the archive's earlier entries as a serial unpack would.
    fn settle(&mut self, rel: &Path) -> Result<(), WriteError> {
        if self.inflight.contains(&self.inflight_keys.hash_one(rel)) {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), WriteError> {
        self.flush_batch()?;
        self.inflight.clear();
        match &self.pool {
            Some(p) => p.drain().map_err(Self::failed),
            None => Ok(()),
        }
    }

    fn flush_batch(&mut self) -> Result<(), WriteError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let jobs = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let pool = self.pool.as_ref().expect("a batch only with a pool");
        pool.send(jobs).map_err(Self::failed)
    }

    fn failed(f: pool::Failed) -> WriteError {
        match f.error {
            Ok(source) => Self::io(&f.rel, source),
            Err(reason) => Self::refuse(&f.rel, reason),
        }
    }

    /// One more entry; refused past the entry bound.
    fn count_entry(&self, rel: &Path) -> Result<(), WriteError> {
        let s = &self.stats;
        let n = s.files + s.dirs + s.symlinks + s.hardlinks;
        if n >= self.limits.max_entries {
            return Err(Self::refuse(
                rel,
                format!(
                    "the revision holds more than {} entries (:revision_max_entries:)",
                    self.limits.max_entries
                ),
            ));
        }
        Ok(())
    }

    /// Will `more` bytes of content fit the byte bound? `declared` says
    /// whether they are a header's claim (refused before reading).
    pub fn check_size(&self, rel: &Path, more: u64) -> Result<(), WriteError> {
        if self.stats.bytes.saturating_add(more) > self.limits.max_bytes {
            return Err(Self::refuse(
                rel,
                format!(
                    "the revision unpacks to more than {} bytes (:revision_max_bytes:)",
                    self.limits.max_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Stop before the deployment root's filesystem is full.
    fn check_space(&mut self, rel: &Path, written: u64) -> Result<(), WriteError> {
        self.unchecked += written;
        if self.unchecked < SPACE_CHECK_EVERY {
            return Ok(());
        }
        self.unchecked = 0;
        let Ok(s) = nix::sys::statvfs::statvfs(&self.root) else {
            return Ok(());
        };
        let fr = s.fragment_size();
        let (avail, size) = (s.blocks_available() * fr, s.blocks() * fr);
        if avail < crate::install::space::margin(size) + SPACE_CHECK_EVERY {
            return Err(Self::refuse(
                rel,
                format!(
                    "the filesystem of {} is nearly full ({avail} bytes free); unpacking stopped",
                    self.root.display()
                ),
            ));
        }
        Ok(())
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Validate an entry name: relative, no `..`, no NUL. `None` for the root itself.
    pub fn clean_name(name: &[u8]) -> Result<Option<PathBuf>, WriteError> {
        let refuse = |reason: &str| WriteError::Refused {
            entry: shown(&String::from_utf8_lossy(name)),
            reason: reason.into(),
        };
        if name.contains(&0) {
            return Err(refuse("the name contains a NUL byte"));
        }
        let path = Path::new(OsStr::from_bytes(name));
        let mut out = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse("absolute paths are not allowed"))
                }
                Component::ParentDir => return Err(refuse("'..' is not allowed in archive paths")),
            }
        }
        Ok((!out.as_os_str().is_empty()).then_some(out))
    }

    fn refuse(rel: &Path, reason: impl Into<String>) -> WriteError {
        WriteError::Refused {
            entry: shown(&rel.display().to_string()),
            reason: reason.into(),
        }
    }

    fn io(rel: &Path, source: io::Error) -> WriteError {
        WriteError::Io {
            entry: shown(&rel.display().to_string()),
            source,
        }
    }

    /// No ancestor of `rel` may be a symlink we wrote.
    fn check_ancestors(&self, rel: &Path) -> Result<(), WriteError> {
        if self.symlinks.is_empty() {
            return Ok(());
        }
        let mut cur = PathBuf::new();
        let mut comps = rel.components().peekable();
        while let Some(c) = comps.next() {
            if comps.peek().is_none() {
                break;
            }
            cur.push(c);
            if self.symlinks.contains(&cur) {
                return Err(Self::refuse(
                    rel,
                    format!("it would be written through the symlink {}", cur.display()),
                ));
            }
        }
        Ok(())
    }

    /// Create the missing parent directories of `rel` (mode 755, like tar).
    fn ensure_parent(&mut self, rel: &Path) -> Result<(), WriteError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        if self.dirs.contains(parent) {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut p = parent;
        while !self.dirs.contains(p) {
            missing.push(p.to_path_buf());
            match p.parent() {
                Some(pp) => p = pp,
                None => break,
            }
        }
        for d in missing.into_iter().rev() {
            self.make_dir(&d, None)?;
        }
        Ok(())
    }

    fn make_dir(&mut self, rel: &Path, meta: Option<&Meta>) -> Result<(), WriteError> {
        self.settle(rel)?;
        let full = self.root.join(rel);
        // Directories stay 0700 until the end so nothing else can write into
        // them during extraction; their real mode is applied by `finish`. A
        // new one is made so unless the umask takes from the owner.
        let mut private = self.umask & 0o700 == 0;
        match fs::DirBuilder::new().mode(0o700).create(&full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                private = false;
                let m = fs::symlink_metadata(&full).map_err(|e| Self::io(rel, e))?;
                if !m.is_dir() {
                    return Err(Self::refuse(
                        rel,
                        "a directory entry collides with an earlier non-directory entry",
                    ));
                }
            }
            Err(e) => return Err(Self::io(rel, e)),
        }
        if !private {
            fs::set_permissions(&full, fs::Permissions::from_mode(0o700))
                .map_err(|e| Self::io(rel, e))?;
        }
        if self.dirs.insert(rel.to_path_buf()) {
            self.stats.dirs += 1;
        }
        let mode = meta.and_then(|m| m.mode).unwrap_or(0o755);
        let owner = meta.and_then(|m| self.owner_of(m));
        self.dir_meta.push(DirMeta {
            rel: rel.to_path_buf(),
            mode,
            owner,
            mtime: meta.and_then(|m| m.mtime),
        });
        Ok(())
    }

    fn owner_of(&mut self, m: &Meta) -> Option<(u32, u32)> {
        if !self.apply_owner {
            return None;
        }
        // GNU tar prefers the names when they exist on this host.
        let uid = m.uname.as_deref().and_then(|n| self.ids.uid(n)).or(m.uid)?;
        let gid = m.gname.as_deref().and_then(|n| self.ids.gid(n)).or(m.gid)?;
        Some((uid, gid))
    }

    fn final_mode(&self, mode: u32) -> u32 {
        if self.as_root {
            mode & 0o7777
        } else {
            mode & 0o777 & !self.umask
        }
    }

    pub fn dir(&mut self, rel: &Path, meta: &Meta) -> Result<(), WriteError> {
        self.count_entry(rel)?;
        self.check_ancestors(rel)?;
        if self.symlinks.contains(rel) {
            return Err(Self::refuse(
                rel,
                "a directory entry collides with an earlier symlink",
            ));
        }
        self.ensure_parent(rel)?;
        if self.dirs.contains(rel) {
            // Explicit entry for a directory created implicitly: take its metadata.
            let owner = self.owner_of(meta);
            if let Some(d) = self.dir_meta.iter_mut().rev().find(|d| d.rel == rel) {
                d.mode = meta.mode.unwrap_or(0o755);
                d.owner = owner;
                d.mtime = meta.mtime;
            }
            return Ok(());
        }
        self.make_dir(rel, Some(meta))
    }

    /// Remove an earlier non-directory entry at `rel` (tar lets later
    /// entries replace earlier ones).
    fn replace_existing(&mut self, rel: &Path, full: &Path) -> Result<(), WriteError> {
        let m = fs::symlink_metadata(full).map_err(|e| Self::io(rel, e))?;
        if m.is_dir() {
            return Err(Self::refuse(
                rel,
                "an entry collides with an earlier directory entry",
            ));
        }
        fs::remove_file(full).map_err(|e| Self::io(rel, e))?;
        self.symlinks.remove(rel);
        Ok(())
    }

    fn create_file(&mut self, rel: &Path, full: &Path) -> Result<File, WriteError> {
        let open = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(full)
        };
        match open() {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.replace_existing(rel, full)?;
                open().map_err(|e| Self::io(rel, e))
            }
            Err(e) => Err(Self::io(rel, e)),
        }
    }

    pub fn file(
        &mut self,
        rel: &Path,
        meta: &Meta,
        content: &mut dyn Read,
    ) -> Result<u64, WriteError> {
        self.count_entry(rel)?;
        self.check_ancestors(rel)?;
        if self.pool.is_none() || self.symlinks.contains(rel) {
            return self.write_here(rel, meta, content);
        }
        let cap = meta.size.map_or(0, |n| n.min(POOLED_MAX + 1));
        let mut head = Vec::with_capacity(cap as usize);
        Read::take(&mut *content, POOLED_MAX + 1)
            .read_to_end(&mut head)
            .map_err(|e| Self::io(rel, e))?;
        self.check_size(rel, head.len() as u64)?;
        if head.len() as u64 <= POOLED_MAX {
            return self.hand_over(rel, meta, head);
        }
        let mut rest = io::Cursor::new(head).chain(content);
        self.write_here(rel, meta, &mut rest)
    }

    /// A small file, read whole: written by the pool.
    fn hand_over(&mut self, rel: &Path, meta: &Meta, data: Vec<u8>) -> Result<u64, WriteError> {
        self.settle(rel)?;
        self.ensure_parent(rel)?;
        let n = data.len() as u64;
        let mode = self.final_mode(meta.mode.unwrap_or(0o644));
        let owner = self
            .owner_of(meta)
            .filter(|o| Some(*o) != self.default_owner);
        let job = pool::Job {
            full: self.root.join(rel),
            rel: rel.to_path_buf(),
            data,
            mode,
            exact: mode & 0o7000 == 0 && mode & self.umask == 0,
            owner,
            mtime: meta.mtime,
        };
        self.batch.push(job);
        self.batch_bytes += n;
        if self.batch.len() >= pool::BATCH_FILES || self.batch_bytes >= pool::BATCH_BYTES {
            self.flush_batch()?;
        }
        self.inflight.insert(self.inflight_keys.hash_one(rel));
        self.stats.files += 1;
        self.stats.bytes += n;
        self.check_space(rel, n)?;
        if self.inflight.len() >= INFLIGHT_MAX {
            self.drain()?;
        }
        Ok(n)
    }

    /// Write a file on this thread, streaming its content.
    fn write_here(
        &mut self,
        rel: &Path,
        meta: &Meta,
        content: &mut dyn Read,
    ) -> Result<u64, WriteError> {
        let mut f = self.open_here(rel)?;
        let mut n = 0u64;
        let mut hole = false;
        loop {
            let r = match content.read(&mut self.buf) {
                Ok(0) => break,
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Self::io(rel, e)),
            };
            self.check_size(rel, n + r as u64)?;
            // Zeros become a hole, as GNU tar writes sparse members: a
            // declared terabyte of nothing takes no disk.
            hole = self.buf[..r].iter().all(|b| *b == 0);
            if hole {
                io::Seek::seek(&mut f, io::SeekFrom::Current(r as i64))
                    .map_err(|e| Self::io(rel, e))?;
            } else {
                io::Write::write_all(&mut f, &self.buf[..r]).map_err(|e| Self::io(rel, e))?;
                self.check_space(rel, r as u64)?;
            }
            n += r as u64;
        }
        if hole {
            f.set_len(n).map_err(|e| Self::io(rel, e))?;
        }
        self.close_file(rel, meta, &f, n)
    }

    /// A regular file of the local filesystem (a directory revision): a
    /// dense one is copied by the kernel (`copy_file_range`, reflinks where
    /// the filesystem has them); a sparse one goes through `file`, which
    /// keeps its holes.
    pub fn copy_from(
        &mut self,
        rel: &Path,
        meta: &Meta,
        src: &mut File,
    ) -> Result<u64, WriteError> {
        use std::os::unix::fs::MetadataExt;
        let md = src.metadata().map_err(|e| Self::io(rel, e))?;
        if md.blocks() * 512 < md.len() || md.len() < COPY_RANGE_FROM {
            return self.file(rel, meta, src);
        }
        let mut f = self.new_file(rel)?;
        let mut n = 0u64;
        loop {
            // One byte past the bound is enough to know it was passed.
            let room = self.limits.max_bytes.saturating_sub(self.stats.bytes + n);
            let want = COPY_RANGE_CHUNK.min(room.saturating_add(1)) as usize;
            let r = match nix::fcntl::copy_file_range(&*src, None, &f, None, want) {
                Ok(0) => break,
                Ok(r) => r as u64,
                Err(nix::errno::Errno::EINTR) => continue,
                // Not served here (an old kernel, a special filesystem):
                // the rest goes through the buffer.
                Err(
                    nix::errno::Errno::EXDEV
                    | nix::errno::Errno::EINVAL
                    | nix::errno::Errno::ENOSYS
                    | nix::errno::Errno::EOPNOTSUPP,
                ) => {
                    let m = io::copy(src, &mut f).map_err(|e| Self::io(rel, e))?;
                    self.check_size(rel, n + m)?;
                    n += m;
                    break;
                }
                Err(e) => return Err(Self::io(rel, e.into())),
            };
            self.check_size(rel, n + r)?;
            self.check_space(rel, r)?;
            n += r;
        }
        self.close_file(rel, meta, &f, n)
    }

    fn new_file(&mut self, rel: &Path) -> Result<File, WriteError> {
        self.count_entry(rel)?;
        self.check_ancestors(rel)?;
        self.open_here(rel)
    }

    fn open_here(&mut self, rel: &Path) -> Result<File, WriteError> {
        self.settle(rel)?;
        self.ensure_parent(rel)?;
        let full = self.root.join(rel);
        self.create_file(rel, &full)
    }

    fn close_file(&mut self, rel: &Path, meta: &Meta, f: &File, n: u64) -> Result<u64, WriteError> {
        // Owner first: chown clears set-id bits, which the mode then restores.
        if let Some((uid, gid)) = self.owner_of(meta) {
            std::os::unix::fs::fchown(f, Some(uid), Some(gid)).map_err(|e| Self::io(rel, e))?;
        }
        let mode = self.final_mode(meta.mode.unwrap_or(0o644));
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Self::io(rel, e))?;
        if let Some(t) = meta.mtime {
            f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
                .map_err(|e| Self::io(rel, e))?;
        }
        self.stats.files += 1;
        self.stats.bytes += n;
        Ok(n)
    }

    pub fn symlink(&mut self, rel: &Path, target: &[u8], meta: &Meta) -> Result<(), WriteError> {
        self.count_entry(rel)?;
        self.check_ancestors(rel)?;
        check_link_target(rel, target)?;
        self.settle(rel)?;
        self.ensure_parent(rel)?;
        let full = self.root.join(rel);
        let target_path = Path::new(OsStr::from_bytes(target));
        if let Err(e) = std::os::unix::fs::symlink(target_path, &full) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(Self::io(rel, e));
            }
            self.replace_existing(rel, &full)?;
            std::os::unix::fs::symlink(target_path, &full).map_err(|e| Self::io(rel, e))?;
        }
        if let Some((uid, gid)) = self.owner_of(meta) {
            std::os::unix::fs::lchown(&full, Some(uid), Some(gid)).map_err(|e| Self::io(rel, e))?;
        }
        self.symlinks.insert(rel.to_path_buf());
        self.stats.symlinks += 1;
        Ok(())
    }

    pub fn hardlink(&mut self, rel: &Path, target_name: &[u8]) -> Result<(), WriteError> {
        self.count_entry(rel)?;
        self.check_ancestors(rel)?;
        let Some(target) = Self::clean_name(target_name).map_err(|_| {
            Self::refuse(
                rel,
                format!(
                    "its hard link target {:?} is outside the archive",
                    String::from_utf8_lossy(target_name)
                ),
            )
        })?
        else {
            return Err(Self::refuse(rel, "a hard link to the archive root"));
        };
        self.check_ancestors(&target)?;
        self.settle(&target)?;
        self.settle(rel)?;
        let target_full = self.root.join(&target);
        match fs::symlink_metadata(&target_full) {
            Ok(m) if m.is_file() => {}
            _ => {
                return Err(Self::refuse(
                    rel,
                    format!(
                    "its hard link target {} is not a regular file written earlier in the archive",
                    target.display()
                ),
                ))
            }
        }
        self.ensure_parent(rel)?;
        let full = self.root.join(rel);
        if let Err(e) = fs::hard_link(&target_full, &full) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(Self::io(rel, e));
            }
            self.replace_existing(rel, &full)?;
            fs::hard_link(&target_full, &full).map_err(|e| Self::io(rel, e))?;
        }
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Apply directory modes, owners and times, deepest first (a read-only
    /// directory must get its mode after its children were written).
    pub fn finish(mut self) -> Result<Stats, WriteError> {
        self.drain()?;
        drop(self.pool.take());
        let mut metas = std::mem::take(&mut self.dir_meta);
        for d in &mut metas {
            d.mode = self.final_mode(d.mode);
        }
        let root = &self.root;
        let apply = |d: &DirMeta| Self::set_dir_meta(root, d);
        // Children before parents: a parent's final mode may shut out its
        // children. A directory named twice (a parent made for a file, then
        // its own entry) is set once per entry, the latest entry first, as
        // the entries came: one after another.
        if metas.len() as u64 != self.stats.dirs {
            metas.iter().rev().try_for_each(apply)?;
            return Ok(self.stats);
        }
        // Otherwise the directories of one depth are independent of each
        // other: deepest first, side by side when many.
        let depth = |d: &DirMeta| d.rel.components().count();
        metas.sort_by_cached_key(|d| std::cmp::Reverse(depth(d)));
        for level in metas.chunk_by(|a, b| depth(a) == depth(b)) {
            if level.len() >= PARALLEL_LEVEL {
                crate::fsutil::parallel_try(level, crate::fsutil::workers(), 64, apply)?;
            } else {
                level.iter().try_for_each(apply)?;
            }
        }
        Ok(self.stats)
    }

    /// A directory's final owner, mode (`d.mode`) and times, on one handle
    /// taken before its mode can refuse it: one path walk where owner, mode
    /// and times each took one.
    fn set_dir_meta(root: &Path, d: &DirMeta) -> Result<(), WriteError> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(root.join(&d.rel))
            .map_err(|e| Self::io(&d.rel, e))?;
        if let Some((uid, gid)) = d.owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(|e| Self::io(&d.rel, e))?;
        }
        f.set_permissions(fs::Permissions::from_mode(d.mode))
            .map_err(|e| Self::io(&d.rel, e))?;
        if let Some(t) = d.mtime {
            let _ = f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t));
        }
        Ok(())
    }
}

/// Directories of one depth set side by side from this many on: fewer are
/// not worth the threads (a chain a thousand deep has a thousand levels).
const PARALLEL_LEVEL: usize = 256;

/// Longest entry name quoted in a message or a log line; a bundle controls
/// its names, and a message reaches the service, the log and the terminal.
pub const SHOWN_NAME: usize = 256;

/// `name`, cut to `SHOWN_NAME` characters with the cut said.
pub fn shown(name: &str) -> String {
    let n = name.chars().count();
    if n <= SHOWN_NAME {
        return name.to_string();
    }
    let head: String = name.chars().take(SHOWN_NAME).collect();
    format!("{head}… ({n} characters)")
}

/// A symlink target must be relative and must not leave the root
/// (`links::outside_root`).
pub fn check_link_target(rel: &Path, target: &[u8]) -> Result<(), WriteError> {
    match crate::links::outside_root(rel, target) {
        None => Ok(()),
        Some(reason) => Err(WriteError::Refused {
            entry: rel.display().to_string(),
            reason,
        }),
    }
}

pub fn unix_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: Result<impl std::fmt::Debug, WriteError>) -> String {
        match r {
            Err(WriteError::Refused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn names_are_relative_and_without_dotdot() {
        assert_eq!(
            SafeWriter::clean_name(b"./a/b/").unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(SafeWriter::clean_name(b"./").unwrap(), None);
        assert!(refused(SafeWriter::clean_name(b"/etc/passwd")).contains("absolute"));
        assert!(refused(SafeWriter::clean_name(b"a/../../x")).contains(".."));
        assert!(refused(SafeWriter::clean_name(b"a\0b")).contains("NUL"));
    }

    #[test]
    fn link_targets_stay_inside() {
        let ok = |rel: &str, t: &str| check_link_target(Path::new(rel), t.as_bytes()).is_ok();
        assert!(ok("a/b/link", "../../x"));
        assert!(ok("a/link", "b/c"));
        assert!(ok("link", "."));
        assert!(!ok("a/link", "../../x"));
        assert!(!ok("link", "/etc/passwd"));
        assert!(!ok("a/link", "b/../../x"));
        assert!(!ok("a/link", "up/.."));
    }

    #[test]
    fn writes_and_refuses() {
        let d = tempfile::tempdir().unwrap();
        let mut w = SafeWriter::new(d.path(), false, Limits::default());
        w.file(
            Path::new("a/b/f.txt"),
            &Meta {
                mode: Some(0o640),
                ..Meta::default()
            },
            &mut &b"hi"[..],
        )
        .unwrap();
        w.symlink(Path::new("a/l"), b"b", &Meta::default()).unwrap();
        assert!(
            refused(w.file(Path::new("a/l/x"), &Meta::default(), &mut &b""[..]))
                .contains("through the symlink")
        );
        w.hardlink(Path::new("h"), b"a/b/f.txt").unwrap();
        assert!(refused(w.hardlink(Path::new("h2"), b"a/l")).contains("not a regular file"));
        assert!(refused(w.hardlink(Path::new("h3"), b"../x")).contains("outside"));
        assert!(refused(w.dir(Path::new("a/b/f.txt"), &Meta::default())).contains("collides"));
        let stats = w.finish().unwrap();
        assert_eq!((stats.files, stats.symlinks, stats.hardlinks), (1, 1, 1));
        assert_eq!(fs::read(d.path().join("h")).unwrap(), b"hi");
        let mode = fs::metadata(d.path().join("a/b/f.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            fs::metadata(d.path().join("a"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
    }

    #[test]
    fn many_directories_get_their_modes_and_times_children_before_parents() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("out");
        fs::create_dir(&root).unwrap();
        let mut w = SafeWriter::new(&root, false, Limits::default());
        let at = |s: u64| Some(std::time::UNIX_EPOCH + Duration::from_secs(s));
        // Enough at one depth to be set side by side; the parents shut
        // out writes (0555) and are set after their children.
        for i in 0..PARALLEL_LEVEL as u64 + 44 {
            let top = PathBuf::from(format!("p{i}"));
            let meta = Meta {
                mode: Some(0o555),
                mtime: at(1_000 + i),
                ..Meta::default()
            };
            w.dir(&top, &meta).unwrap();
            let kid = Meta {
                mode: Some(0o750),
                mtime: at(2_000 + i),
                ..Meta::default()
            };
            w.dir(&top.join("k"), &kid).unwrap();
        }
        w.finish().unwrap();
        for i in 0..PARALLEL_LEVEL as u64 + 44 {
            let top = fs::metadata(root.join(format!("p{i}"))).unwrap();
            assert_eq!(top.permissions().mode() & 0o7777, 0o555, "p{i}");
            assert_eq!(top.mtime(), 1_000 + i as i64, "p{i}");
            let kid = fs::metadata(root.join(format!("p{i}/k"))).unwrap();
            assert_eq!(kid.permissions().mode() & 0o7777, 0o750, "p{i}/k");
            assert_eq!(kid.mtime(), 2_000 + i as i64, "p{i}/k");
        }
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    #[test]
    fn a_large_local_file_is_copied_by_the_kernel_within_the_bounds() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("big");
        let body: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8 + 1).collect();
        fs::write(&src, &body).unwrap();
        let meta = Meta {
            mode: Some(0o640),
            ..Meta::default()
        };
        let root = d.path().join("ok");
        fs::create_dir(&root).unwrap();
        let mut w = SafeWriter::new(&root, false, Limits::default());
        let n = w
            .copy_from(Path::new("a/big"), &meta, &mut File::open(&src).unwrap())
            .unwrap();
        assert_eq!(n, body.len() as u64);
        assert_eq!(fs::read(root.join("a/big")).unwrap(), body);
        let small = d.path().join("small");
        fs::create_dir(&small).unwrap();
        let limits = Limits {
            max_bytes: 1 << 20,
            ..Limits::default()
        };
        let mut w = SafeWriter::new(&small, false, limits);
        let err = w
            .copy_from(Path::new("big"), &meta, &mut File::open(&src).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains(":revision_max_bytes:"), "{err}");
    }
}
