//! An append-only log file with a size bound: past `max_bytes` it becomes
//! `<name>.1` (the older ones move up, the oldest beyond `keep` goes) and a
//! new one starts. The agent's own log, the deployments log and each
//! deployment's scripts.log are written through it, so a chatty script or a
//! host running for years cannot fill the disk (the official 2.x agent
//! rotates its logs at 64 MiB, keeping 8).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The bound: rotate past `max_bytes`, keep `keep` rotated files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 64 * 1024 * 1024,
            keep: 8,
        }
    }
}

pub struct LogFile {
    path: PathBuf,
    file: File,
    written: u64,
    rotation: Rotation,
}

fn open(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl LogFile {
    /// Open `path` for appending; what it already holds counts.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<LogFile> {
        let file = open(path)?;
        let written = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            written,
            rotation,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.keep;
        if keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = fs::remove_file(rotated(&self.path, keep));
            for n in (1..keep).rev() {
                let _ = fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = open(&self.path)?;
        }
        self.written = 0;
        Ok(())
    }
}

impl Write for LogFile {
    /// Whole writes: a line is never split across two files. A rotation
    /// that fails (a read-only directory) goes on appending.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.rotation.max_bytes {
            if let Err(e) = self.rotate() {
                tracing::debug!(path = %self.path.display(), error = %e, "cannot rotate the log");
            }
        }
        self.file.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_bound_and_keeps_only_so_many() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("scripts.log");
        let r = Rotation {
            max_bytes: 100,
            keep: 2,
        };
        let mut f = LogFile::open(&p, r).unwrap();
        let line = [b'x'; 39];
        for i in 0..10u8 {
            let mut l = line.to_vec();
            l[0] = b'0' + i;
            l.push(b'\n');
            f.write_all(&l).unwrap();
        }
        // 40-byte lines, two to a file: 8 and 9 now, 6 7 in .1, 4 5 in .2.
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        assert_eq!(read(&p).lines().map(|l| &l[..1]).collect::<String>(), "89");
        assert_eq!(
            read(&rotated(&p, 1))
                .lines()
                .map(|l| &l[..1])
                .collect::<String>(),
            "67"
        );
        assert_eq!(
            read(&rotated(&p, 2))
                .lines()
                .map(|l| &l[..1])
                .collect::<String>(),
            "45"
        );
        assert!(!rotated(&p, 3).exists(), "keep: 2");
        // Reopened, what is there counts toward the bound.
        drop(f);
        let mut f = LogFile::open(&p, r).unwrap();
        f.write_all(&[b'y'; 40]).unwrap();
        assert!(read(&p).starts_with('y'), "80 + 40 > 100: rotated first");
    }

    #[test]
    fn a_line_longer_than_the_bound_is_written_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let mut f = LogFile::open(
            &p,
            Rotation {
                max_bytes: 10,
                keep: 1,
            },
        )
        .unwrap();
        f.write_all(&[b'z'; 50]).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 50);
    }
}
