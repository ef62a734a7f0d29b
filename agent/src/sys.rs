//! The few places that need `unsafe`: code run between fork and exec, and
//! the extended-attribute syscall that carries POSIX ACLs. Each block says
//! why it is sound.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::unistd::{Gid, Uid};

/// Make the child run as `uid`/`gid` with exactly `groups` as supplementary
/// groups. std's own `uid()`/`gid()` cannot set supplementary groups (it
/// clears them), and its hooks run after it has dropped privileges, so the
/// whole switch happens here, in order: groups, gid, uid.
pub fn switch_user(cmd: &mut Command, uid: u32, gid: u32, groups: Vec<u32>) {
    let groups: Vec<Gid> = groups.into_iter().map(Gid::from_raw).collect();
    // SAFETY: the closure runs in the forked child before exec. It only
    // calls setgroups/setgid/setuid, which are async-signal-safe syscalls,
    // reads `groups`, allocated before the fork and only borrowed here, and
    // allocates nothing. Errors are returned as io::Error, which std reports
    // to the parent through its exec error pipe.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups).map_err(io::Error::from)?;
            nix::unistd::setgid(Gid::from_raw(gid)).map_err(io::Error::from)?;
            nix::unistd::setuid(Uid::from_raw(uid)).map_err(io::Error::from)?;
            Ok(())
        });
    }
}

/// Start the child in a new session, so it outlives the agent's terminal
/// and process group (used for the output drainer).
pub fn new_session(cmd: &mut Command) {
    // SAFETY: setsid is an async-signal-safe syscall with no arguments; the
    // closure captures nothing and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        });
    }
}

/// Set an extended attribute on an open file (used for
/// `system.posix_acl_access` / `system.posix_acl_default`).
pub fn fsetxattr(fd: &impl AsRawFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string and `value` a valid
    // slice; both outlive the call, and the kernel only reads them. The fd is
    // open for the duration of the borrow.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The process umask, read without changing it for longer than two calls.
pub fn current_umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Drop this process's mapping of `len` bytes at `addr` (page aligned):
/// the pages stay in the page cache and fault back in when touched.
/// Callers pass only private file mappings that hold no page of their own
/// (`idle::droppable`), whose contents are exactly the file's.
pub fn forget_file_pages(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: MADV_DONTNEED on a range of a private file mapping none of
    // whose pages was ever written (no anonymous copy) only unmaps pages
    // whose contents equal the file's; the next access maps the same bytes
    // again from the page cache, so no memory the program sees changes. The
    // range is one mapping read from /proc/self/smaps, page aligned by the
    // kernel. Installed binaries and libraries are replaced by rename, never
    // rewritten in place, so the file under a mapping keeps its contents.
    let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Hand the allocator's free memory back to the kernel (glibc only).
pub fn malloc_trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer and only rearranges the
    // allocator's own free lists under its locks; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}
