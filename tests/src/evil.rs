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

/// A zip whose `n` central directory entries all point at one compressed
/// member (`size` zeros, deflated): the overlapping-entries zip bomb.
pub fn zip_overlapping(n: usize, size: usize) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file("k00", opts).expect("file");
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let k = left.min(zeros.len());
        z.write_all(&zeros[..k]).expect("write");
        left -= k;
    }
    let bytes = z.finish().expect("finish").into_inner();
    let eocd = bytes.len() - 22;
    assert_eq!(
        &bytes[eocd..eocd + 4],
        b"PK\x05\x06",
        "no comment, no zip64"
    );
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let (cd_size, cd_off) = (u32_at(eocd + 12), u32_at(eocd + 16));
    let cd = &bytes[cd_off..cd_off + cd_size];
    let mut out = bytes[..cd_off].to_vec();
    for i in 0..n {
        let mut e = cd.to_vec();
        // The name follows the 46-byte fixed part; same length, new digits.
        e[46..49].copy_from_slice(format!("k{i:02}").as_bytes());
        out.extend_from_slice(&e);
    }
    let mut end = bytes[eocd..].to_vec();
    end[8..10].copy_from_slice(&(n as u16).to_le_bytes());
    end[10..12].copy_from_slice(&(n as u16).to_le_bytes());
    end[12..16].copy_from_slice(&((cd_size * n) as u32).to_le_bytes());
    out.extend_from_slice(&end);
    out
}

/// A tar holding `appspec` and a GNU sparse member `name` whose real
/// size is `real` bytes, of which only the last 512 are data.
pub fn sparse_tar(name: &str, real: u64, appspec: &str) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(appspec.len() < 512);
    out.extend_from_slice(
        header(
            "appspec.yml",
            tar::EntryType::Regular,
            appspec.len() as u64,
            "",
        )
        .as_bytes(),
    );
    out.extend_from_slice(appspec.as_bytes());
    out.extend(std::iter::repeat_n(0u8, 512 - appspec.len()));
    let mut h = tar::Header::new_gnu();
    h.set_path(name).expect("name");
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(512);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    {
        let g = h.as_gnu_mut().expect("gnu header");
        // Octal when it fits, else GNU's base-256 (high bit set, big endian).
        let octal = |v: u64, out: &mut [u8]| {
            let s = format!("{v:0w$o}", w = out.len() - 1);
            if s.len() < out.len() {
                out[..s.len()].copy_from_slice(s.as_bytes());
            } else {
                out.fill(0);
                let n = out.len();
                out[n - 8..].copy_from_slice(&v.to_be_bytes());
                out[0] = 0x80;
            }
        };
        octal(real - 512, &mut g.sparse[0].offset);
        octal(512, &mut g.sparse[0].numbytes);
        octal(real, &mut g.realsize);
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend(std::iter::repeat_n(b'x', 512));
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// A tgz whose first record is a GNU long name of `size` bytes ('a's):
/// a few hundred kB on the wire for a 256 MiB name.
pub fn long_name_tgz(size: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    gz.write_all(h.as_bytes()).expect("gzip");
    let chunk = vec![b'a'; 1 << 20];
    let mut left = size;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        gz.write_all(&chunk[..k]).expect("gzip");
        left -= k as u64;
    }
    gz.write_all(&vec![0u8; (512 - (size % 512) as usize) % 512])
        .expect("gzip");
    gz.write_all(header("x", tar::EntryType::Regular, 0, "").as_bytes())
        .expect("gzip");
    gz.write_all(&[0u8; 1024]).expect("gzip");
    gz.finish().expect("gzip")
}

/// A zip as Windows tools make it: made-by MS-DOS, names with `\`.
pub fn windows_zip(files: &[(&str, &str)]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (n, d) in files {
        z.start_file(*n, opts).expect("file");
        z.write_all(d.as_bytes()).expect("write");
    }
    let mut bytes = z.finish().expect("finish").into_inner();
    // Every central directory entry: "version made by" high byte 0 (MS-DOS).
    let mut i = 0;
    while i + 4 <= bytes.len() {
        if &bytes[i..i + 4] == b"PK\x01\x02" {
            bytes[i + 5] = 0;
            bytes[i + 38..i + 42].copy_from_slice(&0u32.to_le_bytes());
        }
        i += 1;
    }
    bytes
}
