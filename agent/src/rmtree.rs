//! Remove a whole tree with several threads, for trees of our own (a
//! previous revision moved aside, an old deployment directory).
//!
//! Every name is opened or removed relative to its parent directory's
//! handle, with `O_NOFOLLOW`: a directory swapped for a symlink while the
//! removal runs is unlinked as a link, never followed. A directory on
//! another filesystem (a mount point) is not entered; its removal then fails
//! and the error says where.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use nix::dir::{Dir, Type};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

struct Node {
    fd: OwnedFd,
    /// `None` for the root, which is removed by path at the end.
    parent: Option<(Arc<Node>, CString)>,
    /// Children not yet removed, plus one while this directory is listed.
    pending: AtomicUsize,
}

/// A directory to enter: its parent and its name there.
type Item = (Arc<Node>, CString);

struct Work {
    /// Directories to enter, and how many workers are inside one.
    queue: Mutex<(Vec<Item>, usize)>,
    wake: Condvar,
    dev: u64,
    error: Mutex<Option<io::Error>>,
}

/// Remove `path` and everything below it; nothing if it does not exist.
pub fn remove_tree(path: &Path, threads: usize) -> io::Result<()> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !m.is_dir() {
        return fs::remove_file(path);
    }
    let fd: OwnedFd = fs::File::open(path)?.into();
    let root = Arc::new(Node {
        fd,
        parent: None,
        pending: AtomicUsize::new(1),
    });
    let work = Work {
        queue: Mutex::new((Vec::new(), 0)),
        wake: Condvar::new(),
        dev: m.dev(),
        error: Mutex::new(None),
    };
    list(&work, &root, path)?;
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| worker(&work, path));
        }
    });
    if let Some(e) = work.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    drop(root);
    fs::remove_dir(path)
}

fn worker(work: &Work, root: &Path) {
    loop {
        let item = {
            let mut q = work.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(item) = q.0.pop() {
                    q.1 += 1;
                    break Some(item);
                }
                if q.1 == 0 {
                    break None;
                }
                q = work.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some((parent, name)) = item else {
            work.wake.notify_all();
            return;
        };
        let failed = work
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !failed {
            if let Err(e) = enter(work, parent, &name, root) {
                let mut slot = work.error.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(e);
            }
        }
        let mut q = work.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.1 -= 1;
        drop(q);
        work.wake.notify_all();
    }
}

fn enter(work: &Work, parent: Arc<Node>, name: &CStr, root: &Path) -> io::Result<()> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(parent.fd.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => fd,
        // Swapped for a symlink or a file since it was listed: unlink that.
        Err(nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP) => {
            unlinkat(parent.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)?;
            return done(parent);
        }
        Err(e) => return Err(e.into()),
    };
    if fstat(fd.as_fd())?.st_dev as u64 != work.dev {
        return Err(io::Error::other(format!(
            "{} is another filesystem mounted inside the tree; not removed",
            shown(root, &parent, name)
        )));
    }
    let node = Arc::new(Node {
        fd,
        parent: Some((parent, name.to_owned())),
        pending: AtomicUsize::new(1),
    });
    list(work, &node, root)
}

/// Unlink every non-directory of `node` and queue its directories.
fn list(work: &Work, node: &Arc<Node>, root: &Path) -> io::Result<()> {
    let mut dir = Dir::from_fd(node.fd.try_clone()?)?;
    let mut subdirs = Vec::new();
    for e in dir.iter() {
        let e = e?;
        let name = e.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let is_dir = match e.file_type() {
            Some(t) => t == Type::Directory,
            None => {
                let st = nix::sys::stat::fstatat(
                    node.fd.as_fd(),
                    name,
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
                st.st_mode & libc::S_IFMT == libc::S_IFDIR
            }
        };
        if is_dir {
            subdirs.push(name.to_owned());
        } else {
            unlinkat(node.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir).map_err(|e| {
                io::Error::other(format!("cannot remove {}: {e}", shown(root, node, name)))
            })?;
        }
    }
    node.pending.fetch_add(subdirs.len(), Ordering::AcqRel);
    if !subdirs.is_empty() {
        let mut q = work.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.0.extend(subdirs.into_iter().map(|n| (Arc::clone(node), n)));
        drop(q);
        work.wake.notify_all();
    }
    done(Arc::clone(node))
}

/// One piece of `node` is finished; an emptied directory is removed, which
/// finishes a piece of its parent.
fn done(node: Arc<Node>) -> io::Result<()> {
    let mut node = node;
    loop {
        if node.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(());
        }
        let Some((parent, name)) = &node.parent else {
            return Ok(()); // the root: removed by path once the threads end
        };
        unlinkat(parent.fd.as_fd(), name.as_c_str(), UnlinkatFlags::RemoveDir)?;
        let parent = Arc::clone(parent);
        node = parent;
    }
}

/// The path of `name` in `node`, for a message.
fn shown(root: &Path, node: &Node, name: &CStr) -> String {
    let mut parts = vec![name.to_bytes().to_vec()];
    let mut cur = node;
    while let Some((p, n)) = &cur.parent {
        parts.push(n.to_bytes().to_vec());
        cur = p;
    }
    let mut out = PathBuf::from(root);
    for p in parts.iter().rev() {
        out.push(std::ffi::OsStr::from_bytes(p));
    }
    out.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_wide_deep_tree_and_never_follows_links() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        let t = d.path().join("t");
        for a in 0..20 {
            for b in 0..5 {
                let dir = t.join(format!("a{a}/b{b}/c"));
                fs::create_dir_all(&dir).unwrap();
                for f in 0..10 {
                    fs::write(dir.join(format!("f{f}")), "x").unwrap();
                }
            }
        }
        std::os::unix::fs::symlink(&outside, t.join("a0/link")).unwrap();
        remove_tree(&t, 3).unwrap();
        assert!(!t.exists());
        assert!(
            outside.join("keep").exists(),
            "the link's target is untouched"
        );
        remove_tree(&t, 3).unwrap(); // gone already: nothing to do
    }
}
