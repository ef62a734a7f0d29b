//! The cleanup file (`<group>-cleanup`) and `install.json`, in the official
//! agent's formats, so a host can switch agents between two deployments.
//!
//! The cleanup file lists, one per line, every path an install created;
//! SELinux file-context rules are lines `semanage\0<path>`. The next install
//! removes those paths (files first, then emptied directories) and deletes
//! the file. A last line without a newline was cut short by a crash and is
//! ignored, as the official agent does.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::keep;
use super::listed::Listed;
use crate::fsutil;

#[derive(Debug, Default)]
pub struct ReplayReport {
    pub removed: usize,
    pub missing: usize,
    /// Directories left because they still hold files that are not ours.
    pub kept_dirs: Vec<PathBuf>,
    /// Entries below a directory of ours that has since become a symlink:
    /// following it could delete files elsewhere, so they are left.
    pub unsafe_skipped: Vec<PathBuf>,
    pub contexts: Vec<PathBuf>,
    /// Listed paths that went with a directory `keep` moved aside.
    pub moved: usize,
}

/// Remove what a previous install created, but what `keep` moved aside.
/// Only listed paths are touched, and never through a directory of the list
/// that was swapped for a symlink.
pub fn replay(listed: &Listed, threads: usize) -> io::Result<ReplayReport> {
    let mut report = ReplayReport {
        contexts: listed.contexts().to_vec(),
        ..ReplayReport::default()
    };
    let mut below = vec![Below::Nothing; listed.ids().end as usize];
    let mut go: Vec<u32> = Vec::with_capacity(listed.paths());
    for id in listed.ids() {
        let own = match below[listed.parent(id) as usize] {
            Below::Moved => Below::Moved,
            Below::Swapped | Below::Unsafe => Below::Unsafe,
            Below::Nothing if listed.is_moved(id) => Below::Moved,
            Below::Nothing if listed.is_listed_dir(id) && is_symlink(&listed.path(id)) => {
                Below::Swapped
            }
            Below::Nothing => Below::Nothing,
        };
        below[id as usize] = own;
        if !listed.is_listed(id) {
            continue;
        }
        match own {
            Below::Moved => report.moved += 1,
            Below::Unsafe => report.unsafe_skipped.push(listed.path(id)),
            // A swapped directory is a symlink of ours now: it goes.
            Below::Nothing | Below::Swapped => go.push(id),
        }
    }
    drop(below);

    let removed = AtomicUsize::new(0);
    let missing = AtomicUsize::new(0);
    let dirs: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    fsutil::parallel_try(&go, threads, 256, |&id| {
        let p = listed.path(id);
        match fs::remove_file(&p) {
            Ok(()) => {
                removed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
                if e.raw_os_error() == Some(libc::EISDIR)
                    || e.raw_os_error() == Some(libc::EPERM) =>
            {
                dirs.lock().unwrap_or_else(|p| p.into_inner()).push(id);
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove {}: {e}", p.display()),
                ))
            }
        }
        Ok(())
    })?;
    let mut dirs = dirs.into_inner().unwrap_or_else(|p| p.into_inner());
    // Deepest first, so each directory is empty of our files when its turn comes.
    dirs.sort_by_cached_key(|&d| std::cmp::Reverse(listed.depth(d)));
    for d in dirs {
        let d = &listed.path(d);
        match fs::remove_dir(d) {
            Ok(()) => report.removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => report.missing += 1,
            // The previous revision moved aside by an install that then
            // crashed: all of it is ours.
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty && keep::is_moved_tree(d) => {
                fsutil::remove_tree(d)?;
                report.removed += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                report.kept_dirs.push(d.to_path_buf())
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove directory {}: {e}", d.display()),
                ))
            }
        }
    }
    report.removed += removed.into_inner();
    report.missing += missing.into_inner();
    Ok(report)
}

/// Where a node stands for `replay`, as seen by what is below it.
#[derive(Clone, Copy)]
enum Below {
    Nothing,
    /// Moved aside whole by `keep`, with everything below it.
    Moved,
    /// A directory of ours that is a symlink now.
    Swapped,
    /// Below a swapped directory.
    Unsafe,
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// Appends the cleanup file as an install proceeds. Entries are written
/// before the paths they name are created, so a crash never leaves a file of
/// ours that the next deployment does not know about.
pub struct Writer {
    out: BufWriter<File>,
}

impl Writer {
    pub fn create(path: &Path) -> io::Result<Writer> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(path)?;
        Ok(Writer {
            out: BufWriter::with_capacity(RECORD_BUFFER, f),
        })
    }

    /// Add to an existing cleanup file (a cut-short last line is ended
    /// first, so no entry runs into another).
    pub fn append(path: &Path) -> io::Result<Writer> {
        let ends_open = last_byte(path).is_some_and(|c| c != b'\n');
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)?;
        let mut w = Writer {
            out: BufWriter::with_capacity(64 * 1024, f),
        };
        if ends_open {
            w.out.write_all(b"\n")?;
        }
        Ok(w)
    }

    pub fn path(&mut self, p: &Path) -> io::Result<()> {
        write_line(&mut self.out, p)
    }

    pub fn context(&mut self, p: &Path) -> io::Result<()> {
        self.out.write_all(b"semanage\0")?;
        self.path(p)
    }

    /// Hand what is buffered to the kernel (survives a process crash).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flush what is left. No fsync: the entries precede the files they
    /// name in the same filesystem journal, which keeps the two consistent
    /// across a power loss, and an fsync here would flush every file just
    /// installed (see `fsutil::Durability`).
    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The previous cleanup file, kept on disk under a second name while the
/// new one is written, so that a failed install gives it back byte for byte
/// without holding it in memory (a million lines are 70 MB).
pub struct Previous {
    path: PathBuf,
    aside: PathBuf,
    /// Its length as read: `keep` appends to it, a rollback cuts that off.
    len: u64,
}

impl Previous {
    /// The cleanup file at `path`, `len` bytes as read, to be kept under
    /// `aside`; whatever a crashed install left there goes first, so that a
    /// rollback can only ever give back this file.
    pub fn claim(path: &Path, aside: &Path, len: u64) -> io::Result<Previous> {
        remove_if_there(aside)?;
        Ok(Previous {
            path: path.to_path_buf(),
            aside: aside.to_path_buf(),
            len,
        })
    }

    /// Start the new cleanup file with `first`, the previous one staying
    /// under its second name. At every instant the file at `path` lists all
    /// the next cleanup must remove: the previous file (with `keep`'s
    /// backups appended) until the rename, the new one after.
    pub fn start_new<'p>(&self, first: impl Iterator<Item = &'p Path>) -> io::Result<Writer> {
        // `claim` cleared the second name.
        if fs::hard_link(&self.path, &self.aside).is_err() {
            // A filesystem without hard links: the same bytes, copied.
            fs::copy(&self.path, &self.aside)?;
        }
        fsutil::write_atomic_with(&self.path, 0o644, fsutil::Durability::Atomic, |f| {
            let mut out = BufWriter::with_capacity(RECORD_BUFFER, f);
            for p in first {
                write_line(&mut out, p)?;
            }
            out.flush()
        })?;
        Writer::append(&self.path)
    }

    /// The install failed: the previous file back, as it was read.
    pub fn restore(&self) -> io::Result<()> {
        let aside = fs::symlink_metadata(&self.aside).is_ok();
        let from = if aside { &self.aside } else { &self.path };
        OpenOptions::new()
            .write(true)
            .open(from)?
            .set_len(self.len)?;
        if aside {
            fs::rename(&self.aside, &self.path)?;
        }
        Ok(())
    }

    /// The install succeeded: the previous file goes.
    pub fn release(&self) {
        if let Err(e) = remove_if_there(&self.aside) {
            tracing::warn!(path = %self.aside.display(), error = %e, "cannot remove the previous cleanup file");
        }
    }
}

/// One line of a cleanup file.
fn write_line(out: &mut impl Write, p: &Path) -> io::Result<()> {
    out.write_all(p.as_os_str().as_bytes())?;
    out.write_all(b"\n")
}

/// Remove a file that may not be there (a crashed install's leftover).
pub fn remove_if_there(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The last byte of a file, read alone (a cleanup file can be megabytes).
fn last_byte(path: &Path) -> Option<u8> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut b = [0u8];
    f.read_exact_at(&mut b, len.checked_sub(1)?).ok()?;
    Some(b[0])
}

/// Rewrite a finished cleanup file without `gone` (atomically: the old
/// file stays whole until the new one replaces it). The file then lists
/// exactly what the install left, as the official agent's does.
pub fn forget(path: &Path, gone: &[PathBuf]) -> io::Result<()> {
    let gone: HashSet<&[u8]> = gone.iter().map(|p| p.as_os_str().as_bytes()).collect();
    // Streamed line by line: a million-line file is not held twice.
    let mut old = io::BufReader::with_capacity(64 * 1024, File::open(path)?);
    fsutil::write_atomic_with(path, 0o644, fsutil::Durability::Atomic, |f| {
        let mut out = BufWriter::with_capacity(64 * 1024, f);
        let mut line = Vec::new();
        loop {
            line.clear();
            if old.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let name = line.strip_suffix(b"\n").unwrap_or(&line);
            if !gone.contains(name) {
                out.write_all(&line)?;
            }
        }
        out.flush()
    })
}

/// The records' write buffer: their lines go out in writes of this size
/// (64 kB: as fast as larger ones, and a quarter of the memory).
const RECORD_BUFFER: usize = 64 * 1024;

/// Streams `install.json`: `{"instructions":[{"type":"copy",...},...]}`.
pub struct InstructionsWriter {
    out: BufWriter<File>,
    first: bool,
    tmp: PathBuf,
    dest: PathBuf,
}

impl InstructionsWriter {
    pub fn create(dest: &Path) -> io::Result<InstructionsWriter> {
        let tmp = dest.with_extension(format!("json.tmp-{}", std::process::id()));
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(RECORD_BUFFER, f);
        out.write_all(b"{\"instructions\":[")?;
        Ok(InstructionsWriter {
            out,
            first: true,
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    fn begin(&mut self, kind: &str) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",")?;
        }
        self.first = false;
        self.out.write_all(b"{\"type\":\"")?;
        self.out.write_all(kind.as_bytes())?;
        self.out.write_all(b"\"")
    }

    fn field(&mut self, key: &str, value: &str) -> io::Result<()> {
        self.out.write_all(b",\"")?;
        self.out.write_all(key.as_bytes())?;
        self.out.write_all(b"\":")?;
        // Twice per file: a path with nothing to escape (nearly all) goes
        // out as it is, the bytes serde_json would write.
        if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.out.write_all(b"\"")?;
            self.out.write_all(value.as_bytes())?;
            return self.out.write_all(b"\"");
        }
        serde_json::to_writer(&mut self.out, value).map_err(io::Error::other)
    }

    fn path_field(&mut self, key: &str, p: &Path) -> io::Result<()> {
        self.field(key, &p.to_string_lossy())
    }

    pub fn copy(&mut self, source: &Path, destination: &Path) -> io::Result<()> {
        self.begin("copy")?;
        self.path_field("source", source)?;
        self.path_field("destination", destination)?;
        self.out.write_all(b"}")
    }

    pub fn mkdir(&mut self, dir: &Path) -> io::Result<()> {
        self.begin("mkdir")?;
        self.path_field("directory", dir)?;
        self.out.write_all(b"}")
    }

    pub fn chmod(&mut self, file: &Path, mode: &str) -> io::Result<()> {
        self.begin("chmod")?;
        self.field("mode", mode)?;
        self.path_field("file", file)?;
        self.out.write_all(b"}")
    }

    pub fn chown(
        &mut self,
        file: &Path,
        owner: Option<&str>,
        group: Option<&str>,
    ) -> io::Result<()> {
        self.begin("chown")?;
        for (k, v) in [("owner", owner), ("group", group)] {
            match v {
                Some(v) => self.field(k, v)?,
                None => write!(self.out, ",\"{k}\":null")?,
            }
        }
        self.path_field("file", file)?;
        self.out.write_all(b"}")
    }

    pub fn setfacl(&mut self, file: &Path, entries: &[String]) -> io::Result<()> {
        self.begin("setfacl")?;
        self.out.write_all(b",\"acl\":")?;
        serde_json::to_writer(&mut self.out, entries).map_err(io::Error::other)?;
        self.path_field("file", file)?;
        self.out.write_all(b"}")
    }

    pub fn semanage(
        &mut self,
        file: &Path,
        user: Option<&str>,
        type_: &str,
        range: Option<&str>,
    ) -> io::Result<()> {
        self.begin("semanage")?;
        let ctx = serde_json::json!({"user": user, "role": null, "type": type_, "range": range});
        self.out.write_all(b",\"context\":")?;
        serde_json::to_writer(&mut self.out, &ctx).map_err(io::Error::other)?;
        self.path_field("file", file)?;
        self.out.write_all(b"}")
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.out.write_all(b"]}")?;
        self.out.flush()?;
        drop(self.out);
        fs::rename(&self.tmp, &self.dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appending_ends_a_cut_short_line_and_forgetting_streams_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("g-cleanup");
        for (before, after) in [
            (None, "/c\n"),
            (Some(""), "/c\n"),
            (Some("/a\n"), "/a\n/c\n"),
            (Some("/a\n/b"), "/a\n/b\n/c\n"),
        ] {
            let _ = fs::remove_file(&f);
            if let Some(b) = before {
                fs::write(&f, b).unwrap();
            }
            let mut w = Writer::append(&f).unwrap();
            w.path(Path::new("/c")).unwrap();
            w.finish().unwrap();
            assert_eq!(fs::read_to_string(&f).unwrap(), after, "{before:?}");
        }
        let lines: String = (0..20_000).map(|i| format!("/srv/app/f{i}\n")).collect();
        fs::write(&f, &lines).unwrap();
        let gone: Vec<PathBuf> = (0..20_000)
            .filter(|i| i % 3 != 0)
            .map(|i| PathBuf::from(format!("/srv/app/f{i}")))
            .collect();
        forget(&f, &gone).unwrap();
        let want: String = (0..20_000)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("/srv/app/f{i}\n"))
            .collect();
        assert_eq!(fs::read_to_string(&f).unwrap(), want);
        let tmp_left = fs::read_dir(d.path()).unwrap().count();
        assert_eq!(tmp_left, 1, "only the cleanup file is left");
    }

    #[test]
    fn a_rollback_gives_back_the_file_as_read_whatever_a_crash_left() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("g-cleanup");
        let aside = d.path().join("g-cleanup.previous");
        let read = || fs::read_to_string(&f).unwrap();
        fs::write(&f, "/a\n/b").unwrap(); // its last line cut short
        fs::write(&aside, "/stale/from/a/crash\n").unwrap();
        let prev = Previous::claim(&f, &aside, 5).unwrap();
        let backups = |f: &Path| {
            let mut w = Writer::append(f).unwrap();
            w.path(Path::new("/backup")).unwrap();
            w.finish().unwrap();
        };
        // Failed before the new file started: only keep's lines go.
        backups(&f);
        prev.restore().unwrap();
        assert_eq!(read(), "/a\n/b");
        assert!(!aside.exists());
        // Failed after it started.
        backups(&f);
        let mut w = prev.start_new([Path::new("/backup")].into_iter()).unwrap();
        w.path(Path::new("/new")).unwrap();
        w.finish().unwrap();
        assert_eq!(read(), "/backup\n/new\n");
        assert_eq!(fs::read_to_string(&aside).unwrap(), "/a\n/b\n/backup\n");
        prev.restore().unwrap();
        assert_eq!(read(), "/a\n/b");
        assert!(!aside.exists());
        // Succeeded: the second name goes, the new file stays.
        let w = prev.start_new(std::iter::empty()).unwrap();
        w.finish().unwrap();
        prev.release();
        assert!(!aside.exists());
        assert_eq!(read(), "");
    }

    #[test]
    fn replay_removes_listed_paths_and_keeps_foreign_content() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("app/sub")).unwrap();
        fs::create_dir_all(r.join("keep")).unwrap();
        fs::write(r.join("app/a"), "").unwrap();
        fs::write(r.join("app/sub/b"), "").unwrap();
        fs::write(r.join("keep/ours"), "").unwrap();
        fs::write(r.join("keep/theirs"), "").unwrap();
        std::os::unix::fs::symlink("a", r.join("app/link")).unwrap();
        let list = [
            "app",
            "app/a",
            "app/sub",
            "app/sub/b",
            "app/link",
            "keep",
            "keep/ours",
            "app/gone",
        ];
        let text: String = list
            .iter()
            .map(|p| format!("{}\n", r.join(p).display()))
            .collect();
        let rep = replay(&Listed::parse(text.as_bytes()), 4).unwrap();
        assert!(!r.join("app").exists());
        assert!(r.join("keep/theirs").exists());
        assert!(!r.join("keep/ours").exists());
        assert_eq!(rep.kept_dirs, vec![r.join("keep")]);
        assert_eq!((rep.removed, rep.missing), (6, 1));
    }

    #[test]
    fn replay_never_follows_a_swapped_directory() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let outside = r.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("precious"), "keep me").unwrap();
        // The previous install created app/ and app/precious; app was later
        // replaced by a symlink to somewhere else.
        std::os::unix::fs::symlink(&outside, r.join("app")).unwrap();
        let text = format!(
            "{}\n{}\n",
            r.join("app").display(),
            r.join("app/precious").display()
        );
        let rep = replay(&Listed::parse(text.as_bytes()), 2).unwrap();
        assert_eq!(
            fs::read_to_string(outside.join("precious")).unwrap(),
            "keep me"
        );
        assert_eq!(rep.unsafe_skipped, vec![r.join("app/precious")]);
        // The symlink itself was ours to remove.
        assert!(fs::symlink_metadata(r.join("app")).is_err());
    }

    #[test]
    fn instructions_are_official_json() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g-install.json");
        let mut w = InstructionsWriter::create(&p).unwrap();
        w.mkdir(Path::new("/srv/app")).unwrap();
        w.copy(Path::new("/arch/a \"x\""), Path::new("/srv/app/a \"x\""))
            .unwrap();
        w.chmod(Path::new("/srv/app/a"), "644").unwrap();
        w.chown(Path::new("/srv/app/a"), Some("web"), None).unwrap();
        w.finish().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(
            v["instructions"][0],
            serde_json::json!({"type": "mkdir", "directory": "/srv/app"})
        );
        assert_eq!(v["instructions"][1]["destination"], "/srv/app/a \"x\"");
        assert_eq!(
            v["instructions"][3],
            serde_json::json!({"type": "chown", "owner": "web", "group": null, "file": "/srv/app/a"})
        );
    }
}
