//! Writers for small archive members: the thread that inflates and parses
//! the archive hands each small file (content already read, checks done) to
//! these, so creating files, which is most of an unpack's time and all in
//! the kernel, uses every core. What may depend on order (a later entry of
//! the same name, a hard link to a file, a directory over a file) is settled
//! by `SafeWriter` before it hands over: it waits for the pool first.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::fsutil;

/// One small file to write, everything about it decided.
pub struct Job {
    pub full: PathBuf,
    /// The entry's name in the archive, for messages.
    pub rel: PathBuf,
    pub data: Vec<u8>,
    pub mode: u32,
    /// Create with `mode` directly (no set-id bits, nothing the umask cuts).
    pub exact: bool,
    pub owner: Option<(u32, u32)>,
    pub mtime: Option<SystemTime>,
}

/// A job that failed: its entry and what happened.
pub struct Failed {
    pub rel: PathBuf,
    pub error: Result<io::Error, &'static str>,
}

#[derive(Default)]
struct State {
    pending: usize,
    failed: Option<Failed>,
}

pub struct Pool {
    tx: Option<SyncSender<Vec<Job>>>,
    threads: Vec<JoinHandle<()>>,
    state: Arc<(Mutex<State>, Condvar)>,
}

/// Batches waiting for a writer. A batch holds at most `BATCH_FILES` files
/// or `BATCH_BYTES` of content (handing files over one by one costs more in
/// locking than writing them), so this bounds the memory they hold.
const QUEUE: usize = 4;
pub const BATCH_FILES: usize = 64;
pub const BATCH_BYTES: u64 = 256 << 10;

impl Pool {
    pub fn new(threads: usize) -> Pool {
        let (tx, rx) = sync_channel::<Vec<Job>>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let threads = (0..threads)
            .map(|_| {
                let (rx, state) = (Arc::clone(&rx), Arc::clone(&state));
                std::thread::spawn(move || work(&rx, &state))
            })
            .collect();
        Pool {
            tx: Some(tx),
            threads,
            state,
        }
    }

    /// Queue a batch; a failure of an earlier one is returned instead.
    pub fn send(&self, jobs: Vec<Job>) -> Result<(), Failed> {
        {
            let mut s = self.state.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = s.failed.take() {
                return Err(f);
            }
            s.pending += 1;
        }
        let tx = self.tx.as_ref().expect("open until drop");
        if tx.send(jobs).is_err() {
            unreachable!("the writers live as long as the pool");
        }
        Ok(())
    }

    /// Wait until every queued job is written; the first failure, if any.
    pub fn drain(&self) -> Result<(), Failed> {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        while s.pending > 0 {
            s = cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        match s.failed.take() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn work(rx: &Mutex<Receiver<Vec<Job>>>, state: &(Mutex<State>, Condvar)) {
    loop {
        let jobs = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let mut failed = None;
        let skip = state
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed
            .is_some();
        if !skip {
            // Per batch: once handed over, its directories stay as they are
            // until the pool is drained (see the module's doc).
            let mut dir = None;
            for job in jobs {
                if let Err(error) = write(&job, &mut dir) {
                    failed = Some(Failed {
                        rel: job.rel,
                        error,
                    });
                    break;
                }
            }
        }
        let mut s = state.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = failed {
            s.failed.get_or_insert(f);
        }
        s.pending -= 1;
        if s.pending == 0 {
            state.1.notify_all();
        }
    }
}

fn create(full: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(full)
}

/// Create `full` by name in a handle on its directory, kept from the
/// previous file of the batch: a batch is consecutive archive entries,
/// mostly of one directory, and this spares the kernel walking the whole
/// path for each file (path walking was 8 % of a 50,000-file deployment's
/// profile, most of it here).
fn create_in(dir: &mut Option<(PathBuf, File)>, full: &Path, mode: u32) -> io::Result<File> {
    let (Some(parent), Some(name)) = (full.parent(), full.file_name()) else {
        return create(full, mode);
    };
    let handle = match dir {
        Some((p, f)) if p.as_path() == parent => f,
        _ => {
            &dir.insert((parent.to_path_buf(), fsutil::open_dir(parent)?))
                .1
        }
    };
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(handle.as_fd(), name, flags, Mode::from_bits_truncate(mode))?;
    Ok(File::from(fd))
}

/// Create, fill and finish one file, as `SafeWriter::file` does.
fn write(
    job: &Job,
    dir: &mut Option<(PathBuf, File)>,
) -> Result<(), Result<io::Error, &'static str>> {
    let first = if job.exact { job.mode } else { 0o600 };
    let mut f = match create_in(dir, &job.full, first) {
        Ok(f) => f,
        // An earlier entry of the same name, written already: a later
        // entry replaces a file or a link, never a directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if fs::symlink_metadata(&job.full).map_err(Ok)?.is_dir() {
                return Err(Err("an entry collides with an earlier directory entry"));
            }
            fs::remove_file(&job.full).map_err(Ok)?;
            create(&job.full, first).map_err(Ok)?
        }
        Err(e) => return Err(Ok(e)),
    };
    let len = job.data.len() as u64;
    if len > 0 && job.data.iter().all(|b| *b == 0) {
        f.set_len(len).map_err(Ok)?; // a hole, as `SafeWriter::file` makes
    } else {
        f.write_all(&job.data).map_err(Ok)?;
    }
    if let Some((uid, gid)) = job.owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(Ok)?;
    }
    if !job.exact {
        f.set_permissions(fs::Permissions::from_mode(job.mode))
            .map_err(Ok)?;
    }
    if let Some(t) = job.mtime {
        f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .map_err(Ok)?;
    }
    Ok(())
}
