//! A bundle read while it downloads. The S3 download writes ranged parts at
//! their offsets (`fetch`); `Progress` knows how far from the start the
//! bytes are all on disk, and `Growing` reads `bundle.tar` up to there,
//! waiting for more, so a tar or tgz unpacks while the parts arrive. The
//! reader only sees the end of the file once the download has finished and
//! passed its checks (the ETag's MD5): a bundle that fails them fails the
//! unpack, whose staging directory is then discarded.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

#[derive(Default)]
pub struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Set once the file exists at its full size.
    size: Option<u64>,
    /// Each part's `[start, end)` and the position its bytes reach.
    parts: Vec<(u64, u64, u64)>,
    /// How the download ended: `Some(Ok)` only after every check passed.
    end: Option<Result<(), String>>,
    /// The reader gave up: the download should stop.
    cancelled: bool,
    /// The download failed before the reader gave up: its error is the
    /// cause, the reader's only a consequence.
    failed_first: bool,
    /// How far the reader has read.
    read: u64,
    /// Bytes the reader had read were fetched again (a response failed its
    /// checksum at its end): what it made of them cannot be trusted.
    tainted: bool,
}

impl State {
    /// Bytes from the start that are all on disk.
    fn contiguous(&self) -> u64 {
        for &(_, end, at) in &self.parts {
            if at < end {
                return at;
            }
        }
        self.size.unwrap_or(0)
    }
}

impl Progress {
    /// The file is created at `size` and will be filled as `parts` (in
    /// offset order, covering it).
    pub fn begin(&self, size: u64, parts: &[(u64, u64)]) {
        self.update(|s| {
            s.size = Some(size);
            s.parts = parts.iter().map(|&(a, b)| (a, b, a)).collect();
        });
    }

    /// The part that starts at `start` has its bytes up to `at` on disk.
    pub fn wrote(&self, start: u64, at: u64) {
        self.update(|s| {
            if let Some(p) = s.parts.iter_mut().find(|p| p.0 == start) {
                p.2 = p.2.max(at);
            }
        });
    }

    /// The part that starts at `start` is fetched again from `to`: a
    /// response failed its checksum, so its bytes from there are suspect.
    pub fn rewind(&self, start: u64, to: u64) {
        self.update(|s| {
            if let Some(p) = s.parts.iter_mut().find(|p| p.0 == start) {
                p.2 = p.2.min(to);
            }
            if s.read > to {
                s.tainted = true;
            }
        });
    }

    /// The reader read bytes that were then fetched again.
    pub fn tainted(&self) -> bool {
        self.state.lock().map(|s| s.tainted).unwrap_or(true)
    }

    /// The download is over; `Ok` only once its checks passed.
    pub fn finish(&self, result: Result<(), String>) {
        self.update(|s| {
            if s.end.is_none() {
                s.failed_first = result.is_err() && !s.cancelled;
                s.end = Some(result);
            }
        });
    }

    /// The download failed on its own, not because the reader gave up.
    pub fn failed_first(&self) -> bool {
        self.state.lock().map(|s| s.failed_first).unwrap_or(false)
    }

    pub fn cancel(&self) {
        self.update(|s| s.cancelled = true);
    }

    pub fn cancelled(&self) -> bool {
        self.state.lock().map(|s| s.cancelled).unwrap_or(true)
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
        self.changed.notify_all();
    }

    fn read_to(&self, pos: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.read = s.read.max(pos);
        }
    }

    /// Wait until bytes past `pos` are on disk; returns how far they reach.
    /// `Ok(pos)` means the end of a download that finished well.
    fn readable(&self, pos: u64) -> io::Result<u64> {
        let mut s = self
            .state
            .lock()
            .map_err(|_| io::Error::other("download state poisoned"))?;
        loop {
            if let Some(Err(e)) = &s.end {
                return Err(io::Error::other(format!("the download failed: {e}")));
            }
            if s.cancelled {
                return Err(io::Error::other("the download was cancelled"));
            }
            if s.tainted {
                return Err(io::Error::other(
                    "bytes already unpacked failed their checksum and are fetched again",
                ));
            }
            if s.size.is_some() {
                let reach = s.contiguous();
                if reach > pos {
                    return Ok(reach);
                }
                if matches!(s.end, Some(Ok(()))) {
                    return Ok(pos);
                }
            } else if matches!(s.end, Some(Ok(()))) {
                return Err(io::Error::other("the download ended before it began"));
            }
            s = self
                .changed
                .wait(s)
                .map_err(|_| io::Error::other("download state poisoned"))?;
        }
    }
}

/// Reads `path` as `progress` lets it: never past the bytes on disk, and
/// to its end only after the download finished well.
pub struct Growing<'a> {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    progress: &'a Progress,
}

impl<'a> Growing<'a> {
    pub fn new(path: &Path, progress: &'a Progress) -> Growing<'a> {
        Growing {
            path: path.to_path_buf(),
            file: None,
            pos: 0,
            progress,
        }
    }
}

impl Read for Growing<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let reach = self.progress.readable(self.pos)?;
        if reach <= self.pos {
            return Ok(0);
        }
        if self.file.is_none() {
            self.file = Some(File::open(&self.path)?);
        }
        let want = out.len().min((reach - self.pos) as usize);
        let n = match &self.file {
            Some(f) => f.read_at(&mut out[..want], self.pos)?,
            None => 0,
        };
        if n == 0 {
            return Err(io::Error::other(format!(
                "{} is shorter than the bytes downloaded",
                self.path.display()
            )));
        }
        self.pos += n as u64;
        self.progress.read_to(self.pos);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bundle.tar");
        File::create(&p).unwrap().write_all(bytes).unwrap();
        (d, p)
    }

    #[test]
    fn reads_only_the_contiguous_bytes_then_the_end_after_the_checks() {
        let (_d, p) = file_of(b"abcdefgh");
        let pr = Progress::default();
        pr.begin(8, &[(0, 4), (4, 8)]);
        pr.wrote(4, 8); // the second part first: nothing readable yet
        let mut s = pr.state.lock().unwrap();
        assert_eq!(s.contiguous(), 0);
        drop(s);
        pr.wrote(0, 2);
        let mut r = Growing::new(&p, &pr);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"ab");
        pr.wrote(0, 4);
        assert_eq!(r.read(&mut buf).unwrap(), 6, "the second part was done");
        s = pr.state.lock().unwrap();
        assert!(s.end.is_none());
        drop(s);
        std::thread::scope(|sc| {
            sc.spawn(|| pr.finish(Ok(())));
            assert_eq!(r.read(&mut buf).unwrap(), 0, "the end, after the checks");
        });
    }

    #[test]
    fn bytes_fetched_again_after_the_reader_passed_them_taint_it() {
        let (_d, p) = file_of(b"abcdefgh");
        let pr = Progress::default();
        pr.begin(8, &[(0, 8)]);
        pr.wrote(0, 8);
        pr.rewind(0, 6); // not read yet: the reader waits for them again
        assert!(!pr.tainted());
        let mut r = Growing::new(&p, &pr);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 6);
        pr.rewind(0, 2);
        assert!(pr.tainted());
        assert!(r.read(&mut buf).is_err(), "what it read is suspect");
    }

    #[test]
    fn a_failed_check_fails_the_reader_at_the_end() {
        let (_d, p) = file_of(b"abcd");
        let pr = Progress::default();
        pr.begin(4, &[(0, 4)]);
        pr.wrote(0, 4);
        let mut r = Growing::new(&p, &pr);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 4);
        pr.finish(Err("MD5 differs".into()));
        let e = r.read(&mut buf).unwrap_err();
        assert!(e.to_string().contains("MD5 differs"), "{e}");
    }

    #[test]
    fn a_reader_waiting_for_a_download_that_never_began_hears_why() {
        let (_d, p) = file_of(b"");
        let pr = Progress::default();
        std::thread::scope(|sc| {
            sc.spawn(|| pr.finish(Err("HeadObject: 403".into())));
            let e = Growing::new(&p, &pr).read(&mut [0u8; 4]).unwrap_err();
            assert!(e.to_string().contains("403"), "{e}");
        });
        let pr = Progress::default();
        pr.finish(Err("403".into()));
        assert!(pr.failed_first());
        let pr = Progress::default();
        pr.cancel();
        assert!(pr.cancelled());
        assert!(Growing::new(&p, &pr).read(&mut [0u8; 4]).is_err());
        pr.finish(Err("cancelled".into()));
        assert!(!pr.failed_first(), "the reader gave up first");
    }
}
