//! What an idle agent gives back. Between deployments it only polls, yet
//! it keeps every code page that start-up and the last deployment touched
//! (the SDKs, TLS, the unpackers): most of its resident memory. Once it is
//! idle again those pages are forgotten (they stay in the page cache, and
//! the ones polling needs fault back in) and the allocator's free memory
//! goes back to the kernel.

use std::time::Instant;

/// The private file mappings of `smaps` (the text of /proc/self/smaps)
/// that are not writable and hold no page of their own: code and read-only
/// data exactly as in their files. Relocated data (RELRO, written at load
/// and then made read-only) has anonymous pages, and is never listed.
pub fn droppable(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        if let Some(range) = mapping(line) {
            current = range.map(|(addr, len)| Mapping {
                addr,
                len,
                rss_kb: 0,
            });
            continue;
        }
        if let (Some(v), Some(m)) = (line.strip_prefix("Rss:"), current.as_mut()) {
            m.rss_kb = kb(v).unwrap_or(0);
        }
        if let Some(v) = line.strip_prefix("Anonymous:") {
            if let (Some(m), Some(0)) = (current.take(), kb(v)) {
                out.push(m);
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub addr: usize,
    pub len: usize,
    /// Resident when listed.
    pub rss_kb: u64,
}

fn kb(v: &str) -> Option<u64> {
    v.trim().trim_end_matches("kB").trim().parse().ok()
}

/// A mapping's header line: `Some(Some(range))` for a candidate,
/// `Some(None)` for any other mapping, `None` for a field line.
fn mapping(line: &str) -> Option<Option<(usize, usize)>> {
    let mut f = line.split_ascii_whitespace();
    let range = f.next()?;
    let (a, b) = range.split_once('-')?;
    let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
        return None;
    };
    let perms = f.next().unwrap_or("");
    let path = f.nth(3).unwrap_or("");
    let candidate = perms.len() == 4
        && perms.as_bytes()[1] == b'-'
        && perms.ends_with('p')
        && path.starts_with('/')
        && end > start;
    Some(candidate.then_some((start, end - start)))
}

/// Give back what the idle agent holds and does not use; logs how much.
pub fn trim() {
    let t0 = Instant::now();
    crate::sys::malloc_trim();
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let (mut forgot_kb, mut failed) = (0, 0);
    for m in droppable(&smaps) {
        match crate::sys::forget_file_pages(m.addr, m.len) {
            Ok(()) => forgot_kb += m.rss_kb,
            Err(_) => failed += 1,
        }
    }
    tracing::debug!(
        forgot_kb,
        failed,
        elapsed_us = t0.elapsed().as_micros() as u64,
        "idle: code pages forgotten, free memory given back"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0400000 r--p 00000000 fe:01 123 /opt/agent/bin/codedeploy-agent
Size:               4096 kB
Anonymous:             0 kB
55d0a0400000-55d0a0a00000 r-xp 00400000 fe:01 123 /opt/agent/bin/codedeploy-agent
Size:               6144 kB
Anonymous:             0 kB
55d0a0a00000-55d0a0a80000 r--p 00a00000 fe:01 123 /opt/agent/bin/codedeploy-agent
Size:                512 kB
Anonymous:           512 kB
55d0a0a80000-55d0a0a90000 rw-p 00a80000 fe:01 123 /opt/agent/bin/codedeploy-agent
Anonymous:            64 kB
55d0a1000000-55d0a1100000 rw-p 00000000 00:00 0 [heap]
Anonymous:          1024 kB
7f0000000000-7f0000001000 r-xp 00000000 00:00 0
Anonymous:             0 kB
7f0000100000-7f0000200000 r-xs 00000000 fe:01 9 /dev/shm/shared
Anonymous:             0 kB
7f0000300000-7f0000400000 r-xp 00000000 fe:01 77 /usr/lib/libcrypto.so.3
Anonymous:             4 kB
7f0000400000-7f0000500000 r-xp 00000000 fe:01 78 /usr/lib/libc.so.6
Size:               1024 kB
Anonymous:             0 kB
";

    #[test]
    fn only_untouched_private_read_only_file_mappings() {
        let got: Vec<(usize, usize)> = droppable(SMAPS).iter().map(|m| (m.addr, m.len)).collect();
        assert_eq!(
            got,
            vec![
                (0x55d0a0000000, 0x400000),
                (0x55d0a0400000, 0x600000),
                (0x7f0000400000, 0x100000),
            ],
            "not relocated data, writable data, the heap, anonymous or shared \
             mappings, nor code with a page of its own"
        );
    }

    #[test]
    fn a_mapping_without_its_anonymous_line_is_kept() {
        let s = "55d0a0400000-55d0a0a00000 r-xp 00400000 fe:01 123 /bin/x\n\
                 Size: 4 kB\n\
                 7f0000400000-7f0000500000 r-xp 00000000 fe:01 78 /lib/y\n";
        assert!(droppable(s).is_empty());
    }

    #[test]
    fn trimming_this_process_forgets_code_pages_and_keeps_working() {
        let resident = || -> u64 {
            let s = std::fs::read_to_string("/proc/self/smaps").unwrap();
            droppable(&s).iter().map(|m| m.rss_kb).sum()
        };
        let before = resident();
        trim();
        let after = resident();
        assert!(
            after < before,
            "resident read-only file pages: {before} kB before, {after} kB after"
        );
        // Code and read-only data fault back in: this runs, and reads them.
        let v: Vec<u64> = (0..1000).map(|i| i * 3).collect();
        assert_eq!(v.iter().sum::<u64>(), 1_498_500);
        assert_eq!(format!("{:x}", 0xabcu32), "abc");
    }
}
