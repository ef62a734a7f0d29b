//! Bounds a tar stream's metadata records before the tar crate reads them.
//!
//! The tar crate reads a GNU long-name (`L`), long-link (`K`) or PAX (`x`,
//! `g`) record whole into memory, whatever size its header declares: a
//! 255 kB tgz can declare a 256 MiB name. This reader sits under the tar
//! crate, follows the stream's 512-byte headers as they pass, and fails the
//! read as soon as such a header declares more than `MAX_RECORD` bytes. To
//! stay on the headers it accounts for every entry's data (a PAX record's
//! `size` overrides the next entry's) and for old GNU sparse extension
//! blocks.

use std::io::{self, Read};

/// Largest long-name, long-link or PAX record accepted (PATH_MAX is 4096;
/// PAX records of honest archives hold a few attributes).
pub const MAX_RECORD: u64 = 1 << 20;

const BLOCK: usize = 512;

enum Want {
    Header,
    /// A PAX record's bytes, then its padding.
    Pax {
        len: u64,
    },
    /// An old GNU sparse extension block; the entry's data follows the last.
    SparseExtension {
        data: u64,
    },
}

pub struct TarGuard<R> {
    inner: R,
    /// Bytes to pass without looking.
    skip: u64,
    want: Want,
    buf: Vec<u8>,
    /// A PAX `size` for the next entry.
    pax_size: Option<u64>,
}

fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64) * BLOCK as u64
}

fn invalid(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

/// A tar numeric field: octal text, or GNU base-256 (high bit set).
fn numeric(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(f[0] & 0x7f);
        for b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let t: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if t.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&t).ok()?, 8).ok()
}

/// The `size` of a PAX record (`<len> size=<n>\n` ...), if it has one.
fn pax_size(rec: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(rec);
    text.split('\n')
        .filter_map(|line| line.split_once(' ').map(|(_, kv)| kv))
        .filter_map(|kv| kv.strip_prefix("size="))
        .next_back()
        .and_then(|v| v.trim().parse().ok())
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            skip: 0,
            want: Want::Header,
            buf: Vec::with_capacity(BLOCK),
            pax_size: None,
        }
    }

    fn wanted(&self) -> usize {
        match self.want {
            Want::Pax { len } => len as usize,
            _ => BLOCK,
        }
    }

    fn watch(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let k = (self.skip.min(bytes.len() as u64)) as usize;
                self.skip -= k as u64;
                bytes = &bytes[k..];
                continue;
            }
            let k = (self.wanted() - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..k]);
            bytes = &bytes[k..];
            if self.buf.len() == self.wanted() {
                let got = std::mem::take(&mut self.buf);
                self.handle(&got)?;
            }
        }
        Ok(())
    }

    fn handle(&mut self, got: &[u8]) -> io::Result<()> {
        match self.want {
            Want::Pax { len } => {
                self.pax_size = pax_size(got);
                self.skip = padded(len) - len;
                self.want = Want::Header;
            }
            Want::SparseExtension { data } => {
                if got[504] == 0 {
                    self.skip = padded(data);
                    self.want = Want::Header;
                }
            }
            Want::Header => self.header(got)?,
        }
        Ok(())
    }

    fn header(&mut self, h: &[u8]) -> io::Result<()> {
        if h.iter().all(|b| *b == 0) {
            return Ok(()); // end-of-archive blocks
        }
        let kind = h[156];
        let size = numeric(&h[124..136])
            .ok_or_else(|| invalid("a tar header has an unreadable size".into()))?;
        if matches!(kind, b'L' | b'K' | b'x' | b'g') {
            if size > MAX_RECORD {
                return Err(invalid(format!(
                    "a tar {} record declares {size} bytes; at most {MAX_RECORD} are read",
                    match kind {
                        b'L' => "long-name",
                        b'K' => "long-link",
                        _ => "PAX",
                    }
                )));
            }
            if kind == b'x' {
                self.want = Want::Pax { len: size };
                if size == 0 {
                    self.want = Want::Header;
                }
                return Ok(());
            }
            self.skip = padded(size);
            return Ok(());
        }
        let data = self.pax_size.take().unwrap_or(size);
        if kind == b'S' && h[482] != 0 {
            self.want = Want::SparseExtension { data };
            return Ok(());
        }
        self.skip = padded(data);
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.watch(&out[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: u8, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let s = format!("{size:011o}");
        h[124..124 + s.len()].copy_from_slice(s.as_bytes());
        h[156] = kind;
        h
    }

    fn read_all(stream: &[u8]) -> io::Result<()> {
        let mut g = TarGuard::new(stream);
        // Small reads: headers straddle read boundaries.
        let mut buf = [0u8; 100];
        while g.read(&mut buf)? > 0 {}
        Ok(())
    }

    #[test]
    fn a_huge_long_name_record_is_refused_at_its_header() {
        let mut s = header("a", b'0', 1000);
        s.extend(vec![b'x'; 1024]);
        s.extend(header("././@LongLink", b'L', 256 << 20));
        let e = read_all(&s).unwrap_err();
        assert!(
            e.to_string()
                .contains("long-name record declares 268435456"),
            "{e}"
        );
    }

    #[test]
    fn the_headers_are_followed_through_data_and_pax_sizes() {
        // A PAX record saying the next entry's data is 2000 bytes (its own
        // header says 0); then a long-name record past the bound.
        let rec = "16 size=2000000\n";
        let mut s = header("pax", b'x', rec.len() as u64);
        s.extend(rec.as_bytes());
        s.extend(vec![0u8; BLOCK - rec.len()]);
        s.extend(header("big", b'0', 0));
        s.extend(vec![b'L'; 2_000_000usize.div_ceil(512) * 512]);
        let ok = s.clone();
        s.extend(header("././@LongLink", b'L', 2 << 20));
        assert!(read_all(&ok).is_ok());
        assert!(read_all(&s).is_err(), "found the header after 2 MB of data");
        // Data that merely looks like a huge header is data.
        let mut d = header("f", b'0', 512);
        d.extend(header("././@LongLink", b'L', 2 << 20));
        d.extend(vec![0u8; 1024]);
        assert!(read_all(&d).is_ok());
    }

    #[test]
    fn base_256_sizes_are_read() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4..].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(numeric(&f), Some(1 << 40));
        assert_eq!(numeric(b"00000001750\0"), Some(1000));
    }
}
