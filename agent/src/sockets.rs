//! The host's TCP connections, read from the kernel's socket tables over
//! netlink (`NETLINK_SOCK_DIAG`, what `ss` reads): no tool to install, no
//! privilege needed, one request per family. For `drainUntil: idle`
//! (hooks-builtin/src/idle.rs judges what this reads).

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use hooks_builtin::idle::{Conn, Sockets};
use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const INET_DIAG_INFO: u16 = 2;
const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_RECV: u8 = 3;
/// Header sizes: nlmsghdr, inet_diag_req_v2, inet_diag_msg.
const NLMSG_HDR: usize = 16;
const DIAG_MSG: usize = 72;
/// Offsets in struct tcp_info (linux/tcp.h, stable since 2.6).
const TCPI_UNACKED: usize = 24;
const TCPI_LAST_DATA_SENT: usize = 44;
const TCPI_LAST_DATA_RECV: usize = 52;
/// u64 counters, Linux 4.1 and later.
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;
/// A dump that never ends is a broken kernel answer, not a reason to hang:
/// this many datagrams at most (each holds dozens of sockets).
const MAX_DATAGRAMS: usize = 10_000;

/// The kernel's socket tables.
pub struct Kernel;

impl Sockets for Kernel {
    fn connections(&self, address: &str, ports: &[u16]) -> io::Result<Vec<Conn>> {
        let local: Option<Ipv4Addr> = address.parse().ok();
        let mut out = Vec::new();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            dump(family, &mut |m| {
                if let Some(c) = parse(m, local, ports) {
                    out.push(c);
                }
            })?;
        }
        Ok(out)
    }
}

/// One SOCK_DIAG_BY_FAMILY dump of TCP sockets in `family` that are
/// established or being opened, with their tcp_info; `each` sees every
/// inet_diag_msg with its attributes.
fn dump(family: u8, each: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let req = request(family);
    sendto(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..MAX_DATAGRAMS {
        let n = recv(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &mut buf,
            MsgFlags::empty(),
        )?;
        let mut at = 0;
        while at + NLMSG_HDR <= n {
            let len = u32_at(&buf, at) as usize;
            let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            if len < NLMSG_HDR || at + len > n {
                return Err(io::Error::other("malformed sock_diag answer"));
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(
                        buf[at + NLMSG_HDR..at + NLMSG_HDR + 4]
                            .try_into()
                            .unwrap_or([0; 4]),
                    );
                    return Err(io::Error::from_raw_os_error(-code));
                }
                _ => each(&buf[at + NLMSG_HDR..at + len]),
            }
            at += (len + 3) & !3;
        }
    }
    Err(io::Error::other("sock_diag dump did not end"))
}

/// nlmsghdr + inet_diag_req_v2 for every TCP socket of `family` in the
/// states that can carry traffic to us.
fn request(family: u8) -> Vec<u8> {
    let len = NLMSG_HDR + 56;
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&(len as u32).to_ne_bytes());
    r.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    r.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    r.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    r.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    r.push(family);
    r.push(libc::IPPROTO_TCP as u8);
    r.push(1 << (INET_DIAG_INFO - 1)); // idiag_ext: tcp_info
    r.push(0);
    let states: u32 = (1 << TCP_ESTABLISHED) | (1 << TCP_SYN_RECV);
    r.extend_from_slice(&states.to_ne_bytes());
    r.resize(len, 0); // inet_diag_sockid: no filter
    r
}

/// One inet_diag_msg: a `Conn` when it is to `local` (any address when
/// unknown) on one of `ports`.
fn parse(m: &[u8], local: Option<Ipv4Addr>, ports: &[u16]) -> Option<Conn> {
    if m.len() < DIAG_MSG {
        return None;
    }
    let (family, state) = (m[0], m[1]);
    // inet_diag_sockid: sport, dport (big-endian), src[16], dst[16].
    let port = u16::from_be_bytes([m[4], m[5]]);
    if !ports.contains(&port) {
        return None;
    }
    let src = &m[8..24];
    let addr = if family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
    } else {
        let a: [u8; 16] = src.try_into().ok()?;
        IpAddr::V6(a.into())
    };
    let v4 = match addr {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    if local.is_some_and(|l| v4 != Some(l)) {
        return None;
    }
    // After the sockid: expires, rqueue, wqueue, uid, inode.
    let unread = u32_at(m, 56);
    let queued = u32_at(m, 60);
    let info = attribute(&m[DIAG_MSG..], INET_DIAG_INFO);
    let field = |off: usize| info.filter(|i| i.len() >= off + 4).map(|i| u32_at(i, off));
    let counter = |off: usize| {
        info.filter(|i| i.len() >= off + 8)
            .map(|i| u64::from_ne_bytes(i[off..off + 8].try_into().unwrap_or([0; 8])))
    };
    Some(Conn {
        port,
        established: state == TCP_ESTABLISHED,
        unread,
        unsent: queued.max(field(TCPI_UNACKED).unwrap_or(0)),
        // Without tcp_info nothing says the connection is quiet: 0 keeps
        // it in flight.
        since_received: field(TCPI_LAST_DATA_RECV).unwrap_or(0),
        since_sent: field(TCPI_LAST_DATA_SENT).unwrap_or(0),
        received: counter(TCPI_BYTES_RECEIVED),
        sent: counter(TCPI_BYTES_ACKED),
    })
}

/// The payload of the first rtattr of `kind`.
fn attribute(mut a: &[u8], kind: u16) -> Option<&[u8]> {
    while a.len() >= 4 {
        let len = u16::from_ne_bytes([a[0], a[1]]) as usize;
        let t = u16::from_ne_bytes([a[2], a[3]]);
        if len < 4 || len > a.len() {
            return None;
        }
        if t == kind {
            return Some(&a[4..len]);
        }
        a = &a[((len + 3) & !3).min(a.len())..];
    }
    None
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    /// The reader against the real kernel: a request held unanswered is in
    /// flight; once answered and quiet, the connection is idle.
    #[test]
    fn reads_a_held_request_then_an_idle_keep_alive_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server, _) = l.accept().unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut got = [0u8; 18];
        server.read_exact(&mut got).unwrap();
        let quiet = Duration::from_millis(200);
        let judge = || {
            let c = Kernel.connections("127.0.0.1", &[port]).unwrap();
            hooks_builtin::idle::judge(&c, &[port], false, quiet)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Read but not answered: in flight however long it waits.
        let waited = || Kernel.connections("127.0.0.1", &[port]).unwrap()[0].since_received;
        while Instant::now() < deadline && waited() < 400 {
            std::thread::yield_now();
        }
        let v = judge();
        assert_eq!((v.open, v.busy), (1, 1), "the server side only, in flight");
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        let mut idle = false;
        while Instant::now() < deadline && !idle {
            idle = judge().idle();
        }
        assert!(idle, "answered and quiet: idle");
        assert_eq!(judge().open, 1);
        // Another address of the host is not this one.
        assert!(Kernel.connections("127.0.0.2", &[port]).unwrap().is_empty());
    }
}
