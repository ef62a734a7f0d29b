//! Hostile archives, written byte by byte (archive libraries refuse to make
//! most of them): traversal, absolute paths, links that escape, devices.

use std::io::Write;

#[derive(Clone, Debug)]
pub enum Entry {
    File(&'static str, &'static str),
    Dir(&'static str),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    CharDevice(&'static str),
    Fifo(&'static str),
}

fn header(name: &str, kind: tar::EntryType, size: u64, link: &str) -> tar::Header {
    let mut h = tar::Header::new_old();
    {
        let raw = h.as_old_mut();
        raw.name = [0; 100];
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        raw.linkname = [0; 100];
        raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// A plain tar with the given entries, names and link targets as written.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (h, data) = match e {
            Entry::File(n, d) => (
                header(n, tar::EntryType::Regular, d.len() as u64, ""),
                d.as_bytes(),
            ),
            Entry::Dir(n) => (header(n, tar::EntryType::Directory, 0, ""), &b""[..]),
            Entry::Symlink(n, t) => (header(n, tar::EntryType::Symlink, 0, t), &b""[..]),
            Entry::Hardlink(n, t) => (header(n, tar::EntryType::Link, 0, t), &b""[..]),
            Entry::CharDevice(n) => (header(n, tar::EntryType::Char, 0, ""), &b""[..]),
            Entry::Fifo(n) => (header(n, tar::EntryType::Fifo, 0, ""), &b""[..]),
        };
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

pub fn tgz(entries: &[Entry]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar(entries)).expect("gzip");
    gz.finish().expect("gzip")
}

/// A zip with the given entries (zip has no hard links or devices).
pub fn zip(entries: &[Entry]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for e in entries {
        match e {
            Entry::File(n, d) => {
                z.start_file(*n, opts.unix_permissions(0o644))
                    .expect("file");
                z.write_all(d.as_bytes()).expect("write");
            }
            Entry::Dir(n) => z.add_directory(*n, opts).expect("dir"),
            Entry::Symlink(n, t) => z.add_symlink(*n, *t, opts).expect("symlink"),
            Entry::Fifo(n) => {
                z.start_file(*n, opts.external_attributes(0o010644 << 16))
                    .expect("fifo");
            }
            Entry::Hardlink(..) | Entry::CharDevice(..) => panic!("zip cannot hold {e:?}"),
        }
    }
    z.finish().expect("finish").into_inner()
}
