//! Filesystem helpers shared by the layout, the unpacker and the installer.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// How hard to push a record to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Atomic for the agent's own crashes: temp file + rename. The
    /// filesystem journal keeps it consistent with the files it describes
    /// across a power loss.
    Atomic,
    /// Also fsync the file and its directory before returning, for records
    /// that must precede an external action. On ext4 (data=ordered) an fsync
    /// flushes every dirty block of the filesystem, so it is kept off the
    /// file-heavy path: after unpacking 50,000 files it costs seconds.
    Synced,
}

/// Replace `path` with `bytes` so that a crash leaves either the old or the
/// new content.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    write_atomic_with(path, mode, durability, |f| f.write_all(bytes))
}

/// `write_atomic` with the content written by `fill`, for content that is
/// streamed rather than held whole.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    durability: Durability,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        fill(&mut f)?;
        if durability == Durability::Synced {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durability == Durability::Synced {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Remove a tree if it exists, on `workers()` threads, never following a
/// symlink (see `rmtree`).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    crate::rmtree::remove_tree(path, workers())
}

/// Lexically normalise an absolute or relative path: drop `.`, resolve `..`
/// against earlier components, collapse separators. Relative paths are
/// joined to `base` first (Ruby's `File.expand_path`).
pub fn expand_path(path: &Path, base: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// A handle on a directory, to create and open files in it by name.
pub fn open_dir(p: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(p)
}

/// How many worker threads file-heavy phases use: the cores, at most 8
/// (more only adds contention on one filesystem).
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// Run `f` over `items` on `threads` scoped threads, in chunks. Stops at the
/// first error and returns it; items after it may not have been processed.
pub fn parallel_try<T: Sync, E: Send>(
    items: &[T],
    threads: usize,
    chunk: usize,
    f: impl Fn(&T) -> Result<(), E> + Sync,
) -> Result<(), E> {
    parallel_chunks(items, threads, chunk, |c| c.iter().try_for_each(&f))
}

/// Run `f` over consecutive chunks of `items` on `threads` scoped threads,
/// so a worker can keep what neighbours share (a directory's handle).
pub fn parallel_chunks<T: Sync, E: Send>(
    items: &[T],
    threads: usize,
    chunk: usize,
    f: impl Fn(&[T]) -> Result<(), E> + Sync,
) -> Result<(), E> {
    parallel_fold(items.len(), threads, chunk, || (), |_, r| f(&items[r])).map(drop)
}

/// Run `f` over consecutive ranges of `0..len` on `threads` scoped threads,
/// each with its own state from `init` (caches, partial sums), which are
/// returned, one a thread. Stops at the first error and returns it; ranges
/// after it may not have been processed.
pub fn parallel_fold<S: Send, E: Send>(
    len: usize,
    threads: usize,
    chunk: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, std::ops::Range<usize>) -> Result<(), E> + Sync,
) -> Result<Vec<S>, E> {
    let chunk = chunk.max(1);
    if threads <= 1 || len <= chunk {
        let mut state = init();
        for start in (0..len).step_by(chunk) {
            f(&mut state, start..(start + chunk).min(len))?;
        }
        return Ok(vec![state]);
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<E>> = Mutex::new(None);
    let states = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut state = init();
                    while !stop.load(Ordering::Relaxed) {
                        let start = next.fetch_add(chunk, Ordering::Relaxed);
                        if start >= len {
                            break;
                        }
                        if let Err(e) = f(&mut state, start..(start + chunk).min(len)) {
                            stop.store(true, Ordering::Relaxed);
                            let mut slot = first_err.lock().unwrap_or_else(|p| p.into_inner());
                            slot.get_or_insert(e);
                            break;
                        }
                    }
                    state
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(states),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_path_is_lexical() {
        let base = Path::new("/srv");
        assert_eq!(
            expand_path(Path::new("/var/www/../html/./x/"), base),
            PathBuf::from("/var/html/x")
        );
        assert_eq!(
            expand_path(Path::new("app"), base),
            PathBuf::from("/srv/app")
        );
        assert_eq!(expand_path(Path::new("/../.."), base), PathBuf::from("/"));
    }

    #[test]
    fn parallel_try_visits_everything_or_stops() {
        let items: Vec<usize> = (0..10_000).collect();
        let sum = AtomicUsize::new(0);
        parallel_try(&items, 4, 64, |i| {
            sum.fetch_add(*i, Ordering::Relaxed);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(sum.into_inner(), 10_000 * 9_999 / 2);
        let err = parallel_try(&items, 4, 64, |i| if *i == 5000 { Err(*i) } else { Ok(()) });
        assert_eq!(err, Err(5000));
    }

    #[test]
    fn parallel_fold_gives_back_every_workers_state() {
        let states = parallel_fold(10_000, 3, 64, Vec::new, |v: &mut Vec<usize>, r| {
            v.extend(r);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(states.len(), 3);
        let mut all: Vec<usize> = states.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10_000).collect::<Vec<_>>());
        let one = parallel_fold(
            10,
            3,
            64,
            || 0,
            |n, r| {
                *n += r.len();
                Ok::<(), ()>(())
            },
        );
        assert_eq!(
            one,
            Ok(vec![10]),
            "a short input stays on the calling thread"
        );
        let err = parallel_fold(
            10_000,
            3,
            64,
            || (),
            |_, r| match r.contains(&5000) {
                true => Err(5000),
                false => Ok(()),
            },
        );
        assert_eq!(err, Err(5000));
    }

    #[test]
    fn write_atomic_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one", 0o644, Durability::Synced).unwrap();
        write_atomic(&p, b"two", 0o644, Durability::Atomic).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
