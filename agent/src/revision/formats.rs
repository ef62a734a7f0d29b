//! Readers for each bundle format, all feeding a [`SafeWriter`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::SystemTime;

use chrono::TimeZone as _;

use super::safe_writer::{unix_time, Limits, Meta, SafeWriter, Stats, WriteError};
use super::{io_err, read_small, RevisionError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    Gzip,
    Zip,
    Tar,
    Unknown,
}

impl Sniffed {
    pub fn describe(self) -> &'static str {
        match self {
            Sniffed::Gzip => "gzip-compressed (tgz)",
            Sniffed::Zip => "a zip archive",
            Sniffed::Tar => "a tar archive",
            Sniffed::Unknown => "not an archive this agent recognises",
        }
    }
}

/// How many first bytes tell a bundle's format.
pub const SNIFF_BYTES: usize = 512;

/// Identify a bundle by its first bytes.
pub fn sniff(path: &Path) -> io::Result<Sniffed> {
    let mut head = [0u8; SNIFF_BYTES];
    let n = read_full(&mut File::open(path)?, &mut head)?;
    Ok(sniff_bytes(&head[..n]))
}

/// Identify a bundle by `head`, its first (up to SNIFF_BYTES) bytes.
pub fn sniff_bytes(head: &[u8]) -> Sniffed {
    let n = head.len();
    if head.starts_with(&[0x1f, 0x8b]) {
        Sniffed::Gzip
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Sniffed::Zip
    } else if n >= 262 && &head[257..262] == b"ustar" || n == 512 && looks_like_v7_tar(head) {
        Sniffed::Tar
    } else {
        Sniffed::Unknown
    }
}

/// Old-style tar headers have no magic; check the header checksum.
fn looks_like_v7_tar(h: &[u8]) -> bool {
    let field = std::str::from_utf8(&h[148..156]).unwrap_or("");
    let Ok(expected) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == expected
}

/// Reads the chunks a decompressing thread sends, so that decompression and
/// file creation use two cores (as `tar xzf` does with its gzip child).
struct ChunkReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read and inflate in pieces of this size. Small enough that the chunks in
/// flight (below) are a few hundred kB, large enough that handing them over
/// costs nothing measurable.
const CHUNK: usize = 64 * 1024;

pub fn untar(
    bundle: &Path,
    staging: &Path,
    gzip: bool,
    restore_owners: bool,
    limits: Limits,
) -> Result<Stats, RevisionError> {
    let file =
        File::open(bundle).map_err(io_err(format!("cannot open bundle {}", bundle.display())))?;
    untar_from(file, bundle, staging, gzip, restore_owners, limits)
}

/// Unpack the tar (gzip: tgz) that `reader` reads; errors name `bundle`.
pub fn untar_from(
    reader: impl Read + Send,
    bundle: &Path,
    staging: &Path,
    gzip: bool,
    restore_owners: bool,
    limits: Limits,
) -> Result<Stats, RevisionError> {
    if !gzip {
        return untar_stream(
            BufReader::with_capacity(CHUNK, reader),
            bundle,
            staging,
            restore_owners,
            limits,
        );
    }
    // At most four chunks in flight: bounded memory whatever the bundle size.
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(4);
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut dec =
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(CHUNK, reader));
            loop {
                let mut buf = vec![0u8; CHUNK];
                match read_full(&mut dec, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::new(e.kind(), format!("gzip: {e}"))));
                        break;
                    }
                }
            }
        });
        untar_stream(
            ChunkReader {
                rx,
                cur: Vec::new(),
                pos: 0,
            },
            bundle,
            staging,
            restore_owners,
            limits,
        )
    })
}

pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn untar_stream(
    reader: impl Read,
    bundle: &Path,
    staging: &Path,
    restore_owners: bool,
    limits: Limits,
) -> Result<Stats, RevisionError> {
    let bad = |e: io::Error| RevisionError::Format {
        path: bundle.into(),
        message: super::safe_writer::shown(&format!("corrupt tar archive: {e}")),
    };
    let mut w = SafeWriter::new(staging, restore_owners, limits);
    let mut ar = tar::Archive::new(super::tar_guard::TarGuard::new(reader));
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path_bytes().into_owned();
        let Some(rel) = SafeWriter::clean_name(&name)? else {
            continue;
        };
        let h = entry.header();
        let et = h.entry_type();
        let meta = Meta {
            mode: h.mode().ok(),
            uid: h.uid().ok().and_then(|v| u32::try_from(v).ok()),
            gid: h.gid().ok().and_then(|v| u32::try_from(v).ok()),
            uname: h
                .username_bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
                .map(String::from),
            gname: h
                .groupname_bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
                .map(String::from),
            mtime: h.mtime().ok().map(|t| unix_time(t as i64)),
            size: Some(entry.size()),
        };
        use tar::EntryType as T;
        match et {
            T::Regular | T::Continuous | T::GNUSparse => {
                // A sparse member declares its real size: refused up front
                // when it cannot fit, before a terabyte of holes is read.
                let real = (et == T::GNUSparse)
                    .then(|| h.as_gnu().and_then(|g| g.real_size().ok()))
                    .flatten();
                w.check_size(&rel, real.unwrap_or(0).max(entry.size()))?;
                w.file(&rel, &meta, &mut entry)?;
            }
            T::Directory => w.dir(&rel, &meta)?,
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                w.symlink(&rel, &target, &meta)?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                w.hardlink(&rel, &target)?;
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            T::Char | T::Block => {
                return Err(refused(&rel, "device files are not allowed in a revision"))
            }
            T::Fifo => return Err(refused(&rel, "FIFOs are not allowed in a revision")),
            other => {
                return Err(refused(
                    &rel,
                    &format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ))
            }
        }
    }
    Ok(w.finish()?)
}

fn refused(rel: &Path, reason: &str) -> RevisionError {
    RevisionError::Entry(WriteError::Refused {
        entry: rel.display().to_string(),
        reason: reason.into(),
    })
}

pub fn unzip(bundle: &Path, staging: &Path, limits: Limits) -> Result<Stats, RevisionError> {
    let bad = |m: String| RevisionError::Format {
        path: bundle.into(),
        message: m,
    };
    let file =
        File::open(bundle).map_err(io_err(format!("cannot open bundle {}", bundle.display())))?;
    let mut z = zip::ZipArchive::new(BufReader::with_capacity(CHUNK, file))
        .map_err(|e| bad(format!("corrupt zip archive: {e}")))?;
    refuse_overlaps(&mut z).map_err(bad)?;
    let mut w = SafeWriter::new(staging, false, limits);
    for i in 0..z.len() {
        let mut e = z
            .by_index(i)
            .map_err(|e| bad(format!("zip entry #{i}: {e}")))?;
        let mut name = e
            .name()
            .map_err(|err| bad(format!("zip entry #{i}: {err}")))?
            .into_owned();
        // Zips made on DOS/Windows separate names with `\`; `unzip` reads
        // them as `/` (then the usual checks apply: `..\..\x` is refused).
        if matches!(
            e.system(),
            zip::System::Dos | zip::System::WindowsNTFS | zip::System::VFAT
        ) {
            name = name.replace('\\', "/");
        }
        let Some(rel) = SafeWriter::clean_name(name.as_bytes())? else {
            continue;
        };
        let mode = e.unix_mode();
        let meta = Meta {
            mode: mode.map(|m| m & 0o7777),
            mtime: zip_mtime(&e),
            size: Some(e.size()),
            ..Meta::default()
        };
        let kind = mode.map(|m| m & libc::S_IFMT);
        if e.is_dir() {
            w.dir(&rel, &meta)?;
        } else if e.is_symlink() {
            let target = read_small(&mut e, 4096).map_err(|err| bad(format!("{name}: {err}")))?;
            w.symlink(&rel, &target, &meta)?;
        } else if matches!(kind, Some(k) if k != 0 && k != libc::S_IFREG) {
            return Err(refused(
                &rel,
                "special files (devices, FIFOs, sockets) are not allowed in a revision",
            ));
        } else {
            w.file(&rel, &meta, &mut e).map_err(|err| match err {
                WriteError::Io { entry, source }
                    if source.kind() == io::ErrorKind::InvalidData
                        || source.kind() == io::ErrorKind::Unsupported =>
                {
                    bad(format!("{entry}: {source}"))
                }
                other => RevisionError::Entry(other),
            })?;
        }
    }
    Ok(w.finish()?)
}

/// Entries whose bytes overlap another's (many entries sharing one
/// compressed kernel: a zip bomb) are refused before anything is written;
/// an honest zip gives each entry its own bytes.
fn refuse_overlaps<R: Read + io::Seek>(z: &mut zip::ZipArchive<R>) -> Result<(), String> {
    let mut spans = Vec::with_capacity(z.len());
    for i in 0..z.len() {
        let e = z
            .by_index_raw(i)
            .map_err(|e| format!("zip entry #{i}: {e}"))?;
        let start = e.header_start();
        let end = e
            .data_start()
            .unwrap_or(start)
            .saturating_add(e.compressed_size());
        spans.push((start, end, i));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        let ((_, end, a), (start, _, b)) = (w[0], w[1]);
        if start < end {
            return Err(format!(
                "zip entries #{a} and #{b} share bytes (overlapping entries, as in a zip bomb); refused"
            ));
        }
    }
    Ok(())
}

/// The modification time: the Unix extended timestamp when present, else
/// the DOS time, which zip stores in local time.
fn zip_mtime<R: Read>(e: &zip::read::ZipFile<'_, R>) -> Option<SystemTime> {
    for f in e.extra_data_fields() {
        if let zip::ExtraField::ExtendedTimestamp(ts) = f {
            if let Some(t) = ts.mod_time() {
                return Some(unix_time(i64::from(t)));
            }
        }
    }
    let d = e.last_modified()?;
    let local = chrono::Local
        .with_ymd_and_hms(
            i32::from(d.year()),
            u32::from(d.month()),
            u32::from(d.day()),
            u32::from(d.hour()),
            u32::from(d.minute()),
            u32::from(d.second()),
        )
        .earliest()?;
    Some(unix_time(local.timestamp()))
}

/// A local directory revision: copied (modes and times kept, owners not,
/// as the official agent's copy does), under the same rules as archives.
pub fn copy_directory(src: &Path, staging: &Path, limits: Limits) -> Result<Stats, RevisionError> {
    let mut w = SafeWriter::new(staging, false, limits);
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = src.join(&rel_dir);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(io_err(format!("cannot list {}", dir.display())))?
            .collect::<Result<_, _>>()
            .map_err(io_err(format!("cannot list {}", dir.display())))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let rel = rel_dir.join(e.file_name());
            let path = e.path();
            let md = fs::symlink_metadata(&path)
                .map_err(io_err(format!("cannot stat {}", path.display())))?;
            let meta = Meta {
                mode: Some(md.mode() & 0o7777),
                mtime: md.modified().ok(),
                size: Some(md.len()),
                ..Meta::default()
            };
            let ft = md.file_type();
            if ft.is_dir() {
                w.dir(&rel, &meta)?;
                stack.push(rel);
            } else if ft.is_symlink() {
                let target = fs::read_link(&path)
                    .map_err(io_err(format!("cannot read link {}", path.display())))?;
                w.symlink(&rel, target.as_os_str().as_bytes(), &meta)?;
            } else if ft.is_file() {
                let mut f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_err(format!("cannot open {}", path.display())))?;
                w.copy_from(&rel, &meta, &mut f)?;
            } else if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device()
            {
                return Err(refused(
                    &rel,
                    "special files (devices, FIFOs, sockets) are not allowed in a revision",
                ));
            }
        }
    }
    Ok(w.finish()?)
}
