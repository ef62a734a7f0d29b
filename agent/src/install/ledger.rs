//! The cleanup file (`<group>-cleanup`) and `install.json`, in the official
//! agent's formats, so a host can switch agents between two deployments.
//!
//! The cleanup file lists, one per line, every path an install created;
//! SELinux file-context rules are lines `semanage\0<path>`. The next install
//! removes those paths (files first, then emptied directories) and deletes
//! the file. A last line without a newline was cut short by a crash and is
//! ignored, as the official agent does.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::keep;
use crate::fsutil;

/// One line of a cleanup file, borrowed from the file's bytes: a million
/// lines cost 24 bytes each, not an allocation each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    Path(&'a Path),
    Context(&'a Path),
}

impl<'a> Entry<'a> {
    /// The path the line names, whichever kind of line it is.
    fn path(self) -> &'a Path {
        match self {
            Entry::Path(p) | Entry::Context(p) => p,
        }
    }
}

/// Parse a cleanup file's bytes.
pub fn parse(bytes: &[u8]) -> Vec<Entry<'_>> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => &bytes[..=i],
        None => return Vec::new(),
    };
    // Counted first, so a million lines are not grown by doubling.
    let mut entries = Vec::with_capacity(complete.iter().filter(|b| **b == b'\n').count());
    entries.extend(
        complete
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|line| match line.strip_prefix(b"semanage\0") {
                Some(p) => Entry::Context(Path::new(OsStr::from_bytes(p))),
                None => Entry::Path(Path::new(OsStr::from_bytes(line))),
            }),
    );
    entries
}

/// The paths of a cleanup file's lines as a set: an index into the lines
/// and a control byte per path (5 bytes, where a `HashSet<&Path>` takes 17),
/// so a million-line file costs a 10 MB set rather than 36. Paths compare
/// as `Path`s (`/a/b/` is `/a/b`), as they did in a `HashSet<&Path>`.
pub struct PathSet<'e, 'a> {
    entries: &'e [Entry<'a>],
    table: hashbrown::HashTable<u32>,
    state: std::hash::RandomState,
}

impl<'e, 'a> PathSet<'e, 'a> {
    pub fn new(entries: &'e [Entry<'a>]) -> PathSet<'e, 'a> {
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        let paths = entries
            .iter()
            .filter(|e| matches!(e, Entry::Path(_)))
            .count();
        let mut table = hashbrown::HashTable::with_capacity(paths);
        let path = |i: u32| entries[i as usize].path();
        for (i, e) in entries.iter().enumerate() {
            let Entry::Path(p) = *e else { continue };
            let h = state.hash_one(p);
            if let hashbrown::hash_table::Entry::Vacant(v) =
                table.entry(h, |&j| path(j) == p, |&j| state.hash_one(path(j)))
            {
                v.insert(i as u32);
            }
        }
        PathSet {
            entries,
            table,
            state,
        }
    }

    fn path(&self, i: u32) -> &'a Path {
        self.entries[i as usize].path()
    }

    /// The listed path equal to `p`.
    pub fn get(&self, p: &Path) -> Option<&'a Path> {
        use std::hash::BuildHasher;
        let h = self.state.hash_one(p);
        self.table
            .find(h, |&j| self.path(j) == p)
            .map(|&j| self.path(j))
    }

    pub fn contains(&self, p: &Path) -> bool {
        self.get(p).is_some()
    }

    /// Each listed path once, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &'a Path> + '_ {
        self.table.iter().map(|&j| self.path(j))
    }
}

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
}

/// Remove what a previous install created. Only listed paths are touched,
/// and never through a directory of the list that was swapped for a symlink.
pub fn replay(entries: &[Entry], threads: usize) -> io::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let paths: Vec<&Path> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Path(p) => Some(*p),
            Entry::Context(c) => {
                report.contexts.push(c.to_path_buf());
                None
            }
        })
        .collect();
    let listed: HashSet<&Path> = paths.iter().copied().collect();
    // A listed path that is the parent of another listed path was a
    // directory we created; if it is a symlink now, do not go below it.
    let mut ledger_dirs: HashSet<&Path> = HashSet::new();
    for p in &paths {
        if let Some(parent) = p.parent() {
            if listed.contains(parent) {
                ledger_dirs.insert(parent);
            }
        }
    }
    let poisoned: HashSet<&Path> = ledger_dirs
        .iter()
        .copied()
        .filter(|d| {
            fs::symlink_metadata(d)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
        })
        .collect();
    let safe: Vec<&Path> = if poisoned.is_empty() {
        paths.clone()
    } else {
        paths
            .iter()
            .copied()
            .filter(|p| {
                let below = p.ancestors().skip(1).any(|a| poisoned.contains(a));
                if below {
                    report.unsafe_skipped.push(p.to_path_buf());
                }
                !below
            })
            .collect()
    };

    let removed = AtomicUsize::new(0);
    let missing = AtomicUsize::new(0);
    let dirs: Mutex<Vec<&Path>> = Mutex::new(Vec::new());
    fsutil::parallel_try(&safe, threads, 256, |p| {
        match fs::remove_file(p) {
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
                dirs.lock().unwrap_or_else(|p| p.into_inner()).push(p);
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
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
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
        self.out.write_all(p.as_os_str().as_bytes())?;
        self.out.write_all(b"\n")
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
        write!(self.out, "{{\"type\":\"{kind}\"")
    }

    fn field(&mut self, key: &str, value: &str) -> io::Result<()> {
        write!(self.out, ",\"{key}\":")?;
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
    fn parses_the_official_format() {
        let bytes = b"/srv/app\n/srv/app/a.txt\nsemanage\0/srv/app/a.txt\n/srv/app/partial";
        assert_eq!(
            parse(bytes),
            vec![
                Entry::Path(Path::new("/srv/app")),
                Entry::Path(Path::new("/srv/app/a.txt")),
                Entry::Context(Path::new("/srv/app/a.txt")),
            ]
        );
        assert!(parse(b"").is_empty());
        assert!(parse(b"/only/partial").is_empty());
    }

    #[test]
    fn a_path_set_holds_each_listed_path_once_and_compares_as_paths() {
        let bytes = b"/srv/app\n/srv/app/a\nsemanage\0/srv/ctx\n/srv/app/a\n/srv/app/b/\n";
        let entries = parse(bytes);
        let set = PathSet::new(&entries);
        let mut all: Vec<&Path> = set.iter().collect();
        all.sort();
        assert_eq!(
            all,
            [
                Path::new("/srv/app"),
                Path::new("/srv/app/a"),
                Path::new("/srv/app/b/")
            ]
        );
        assert!(set.contains(Path::new("/srv/app/a")));
        // As a HashSet<&Path> would: a trailing slash does not matter.
        assert_eq!(
            set.get(Path::new("/srv/app/b")),
            Some(Path::new("/srv/app/b/"))
        );
        assert!(
            !set.contains(Path::new("/srv/ctx")),
            "contexts are not paths"
        );
        assert!(!set.contains(Path::new("/srv")));
        assert!(PathSet::new(&[]).iter().next().is_none());
    }

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
        let rep = replay(&parse(text.as_bytes()), 4).unwrap();
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
        let rep = replay(&parse(text.as_bytes()), 2).unwrap();
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
