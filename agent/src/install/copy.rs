//! Copying the revision's regular files into place, the hot path of an
//! install: each file is opened by its name relative to its directory's
//! handle (kept while neighbours share the directory), so the kernel does
//! not walk the whole absolute path twice per file, and mode and owner are
//! set only when creating the file did not already give them.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use super::apply::{copy_sparse, fail, Applier, ApplyError};
use super::archive_tree::AKind;
use super::plan::DKind;
use crate::fsutil::open_dir;

/// Files up to this size go through one read and one write: cheaper than
/// `copy_file_range` for them, which tmpfs and others serve as a splice.
const SMALL: u64 = 256 * 1024;

/// What a new file gets without asking, read once per install.
pub(super) struct Defaults {
    umask: u32,
    uid: u32,
    gid: u32,
}

impl Defaults {
    pub(super) fn current() -> Defaults {
        Defaults {
            umask: crate::sys::current_umask(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }
}

/// The directory handles a worker holds: the last source and destination
/// directory it used, with whether the destination is set-group-id (new
/// files then take its group).
#[derive(Default)]
struct Dirs {
    src: Option<(u32, OwnedFd)>,
    dst: Option<(u32, OwnedFd, bool)>,
}

/// A destination directory, and whether it is set-group-id.
fn open_dest_dir(p: &Path) -> Result<(File, bool), ApplyError> {
    let f = open_dir(p).map_err(|e| fail(p, "cannot open", e))?;
    let mode = f.metadata().map_err(|e| fail(p, "cannot stat", e))?.mode();
    Ok((f, mode & libc::S_ISGID != 0))
}

impl Applier<'_, '_> {
    /// Copy the plan's new files (not replacements) among `ids`.
    pub(super) fn copy_chunk(
        &self,
        ids: std::ops::Range<u32>,
        def: &Defaults,
    ) -> Result<(), ApplyError> {
        let mut dirs = Dirs::default();
        let mut buf = Vec::new();
        for id in ids {
            let DKind::Copy {
                src,
                replace: false,
            } = self.plan.kind(id)
            else {
                continue;
            };
            if self.archive.kind(src) != AKind::File {
                self.copy(id, &self.plan.path(id), def)?;
                continue;
            }
            self.open_dirs(&mut dirs, id, src)?;
            let (Some((_, sfd)), Some((_, dfd, setgid))) = (&dirs.src, &dirs.dst) else {
                unreachable!("opened above");
            };
            let at = Where {
                src_dir: sfd.as_fd(),
                dst_dir: dfd.as_fd(),
                setgid: *setgid,
                name: self.plan.file_name(id),
                dest: None,
            };
            self.copy_at(id, src, at, &mut buf, def)?;
        }
        Ok(())
    }

    /// Copy one regular file to `dest` (a replacement's temporary name).
    pub(super) fn copy_file_to(
        &self,
        id: u32,
        src: u32,
        dest: &Path,
        def: &Defaults,
    ) -> Result<(), ApplyError> {
        let sp = self.archive.full_path(self.archive.parent(src));
        let s = open_dir(&sp).map_err(|e| fail(&sp, "cannot open", e))?;
        let (d, setgid) = open_dest_dir(dest.parent().unwrap_or(Path::new("/")))?;
        let at = Where {
            src_dir: s.as_fd(),
            dst_dir: d.as_fd(),
            setgid,
            name: dest.file_name().unwrap_or_default(),
            dest: Some(dest),
        };
        self.copy_at(id, src, at, &mut Vec::new(), def)
    }

    fn open_dirs(&self, dirs: &mut Dirs, id: u32, src: u32) -> Result<(), ApplyError> {
        let sp = self.archive.parent(src);
        if dirs.src.as_ref().map(|d| d.0) != Some(sp) {
            let p = self.archive.full_path(sp);
            let f = open_dir(&p).map_err(|e| fail(&p, "cannot open", e))?;
            dirs.src = Some((sp, f.into()));
        }
        let dp = self.plan.parent(id);
        if dirs.dst.as_ref().map(|d| d.0) != Some(dp) {
            let (f, setgid) = open_dest_dir(&self.plan.path(dp))?;
            dirs.dst = Some((dp, f.into(), setgid));
        }
        Ok(())
    }

    /// Copy one regular file, keeping mode, times and (as root) owner, never
    /// following a symlink at the destination.
    fn copy_at(
        &self,
        id: u32,
        src: u32,
        at: Where<'_>,
        buf: &mut Vec<u8>,
        def: &Defaults,
    ) -> Result<(), ApplyError> {
        let src_name = OsStr::from_bytes(self.archive.name(src));
        let mut s = File::from(
            open_source(at.src_dir, src_name)
                .map_err(|e| fail(&self.archive.full_path(src), "cannot open", e))?,
        );
        let md = s
            .metadata()
            .map_err(|e| fail(&self.archive.full_path(src), "cannot stat", e))?;
        let mode = md.mode() & 0o7777;
        // Created with its final mode unless the umask would cut it or it
        // has set-id bits (those must follow the owner, which clears them).
        let exact = mode & 0o7000 == 0 && mode & def.umask == 0;
        let wr =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let first = Mode::from_bits_truncate(if exact { mode } else { 0o600 });
        let dest = || {
            at.dest
                .map_or_else(|| self.plan.path(id), Path::to_path_buf)
        };
        let mut d = File::from(
            openat(at.dst_dir, at.name, wr, first)
                .map_err(|e| fail(&dest(), "cannot create", e))?,
        );
        let len = md.len();
        let copied = if md.blocks() * 512 < len {
            // A sparse file stays sparse at the destination too.
            copy_sparse(&mut s, &mut d, len)
        } else if len <= SMALL {
            buf.resize(len as usize, 0);
            s.read_exact(buf).and_then(|()| d.write_all(buf))
        } else {
            io::copy(&mut s, &mut d).map(drop)
        };
        copied.map_err(|e| fail(&dest(), "cannot copy", e))?;
        let owner_given = md.uid() == def.uid && md.gid() == def.gid && !at.setgid;
        if self.as_root && !owner_given {
            std::os::unix::fs::fchown(&d, Some(md.uid()), Some(md.gid()))
                .map_err(|e| fail(&dest(), "cannot set owner", e))?;
        }
        if !exact {
            d.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| fail(&dest(), "cannot set mode", e))?;
        }
        let times = fs::FileTimes::new()
            .set_accessed(md.accessed().unwrap_or(std::time::UNIX_EPOCH))
            .set_modified(md.modified().unwrap_or(std::time::UNIX_EPOCH));
        d.set_times(times)
            .map_err(|e| fail(&dest(), "cannot set times", e))
    }
}

/// Open an archive file to read. Without `O_NOATIME` the first read of a
/// freshly unpacked file (its access time is not after its modification
/// time) updates its inode, which ext4 then journals: a write per file
/// copied. The flag needs the file's owner or `CAP_FOWNER`; where it is
/// refused the file is opened without it.
fn open_source(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    let rd = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(dir, name, rd | OFlag::O_NOATIME, Mode::empty()) {
        Err(nix::errno::Errno::EPERM) => openat(dir, name, rd, Mode::empty()),
        r => r,
    }
}

#[derive(Clone, Copy)]
struct Where<'f> {
    src_dir: BorrowedFd<'f>,
    dst_dir: BorrowedFd<'f>,
    setgid: bool,
    /// The name to create in `dst_dir`, and its path when it is not the
    /// plan's (for messages).
    name: &'f OsStr,
    dest: Option<&'f Path>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn reading_an_archive_file_leaves_its_access_time() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"content").unwrap();
        // As the unpack leaves it: accessed no later than modified, which
        // is when a relatime mount updates the access time on a read.
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let f = File::options().write(true).open(&p).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
        drop(f);
        let dir = open_dir(d.path()).unwrap();
        let mut s = File::from(open_source(dir.as_fd(), OsStr::new("f")).unwrap());
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "content");
        assert_eq!(fs::metadata(&p).unwrap().atime(), 1_000_000);
    }
}
