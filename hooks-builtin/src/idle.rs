//! `drainUntil: idle` (docs/loadbalancer.md 3.2.1): is the load balancer
//! done with this host, as the host's own TCP connections on the registered
//! ports tell it? Pure: the connections come from the kernel's socket tables
//! through [`Sockets`], read by the agent.

use std::time::Duration;

/// One TCP connection to a registered port, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// The local port (the registered one).
    pub port: u16,
    /// Handshake done (`ESTABLISHED`); otherwise still opening (`SYN_RECV`).
    pub established: bool,
    /// Bytes received and not yet read by the application.
    pub unread: u32,
    /// Bytes the application wrote that are not yet sent or acknowledged.
    pub unsent: u32,
    /// Since data last arrived, ms (the connection's age if none did).
    pub since_received: u32,
    /// Since data was last sent, ms (the connection's age if none was).
    pub since_sent: u32,
    /// Bytes received in all; `None` where the kernel does not say.
    pub received: Option<u64>,
    /// Bytes sent and acknowledged in all; `None` where the kernel does not say.
    pub sent: Option<u64>,
}

impl Conn {
    /// Does a request/response protocol have a request in flight here?
    ///
    /// A request that arrived after the last response is waiting for its
    /// own; bytes queued either way are a request or a response moving;
    /// any data within `quiet` may be the start of one. The kernel's clock
    /// ticks every few ms, so a request that arrives in the tick the
    /// connection opened (or the previous response left) has the same time:
    /// on a fresh connection the byte counts tell (received, nothing sent);
    /// what stays unseen is a request in the same tick as the previous
    /// response on a reused connection, still served past `quiet` (a
    /// graceful stop finishes that one anyway).
    pub fn in_flight(&self, quiet: Duration) -> bool {
        let quiet = u32::try_from(quiet.as_millis()).unwrap_or(u32::MAX);
        let unanswered = match (self.received, self.sent) {
            (Some(r), Some(s)) => r > 0 && s == 0,
            // Unknown counts: a tie may hide a request, so it counts.
            _ => true,
        };
        !self.established
            || self.unread > 0
            || self.unsent > 0
            || self.since_received < self.since_sent
            || (self.since_received == self.since_sent && unanswered)
            || self.since_received.min(self.since_sent) < quiet
    }
}

/// What the connections say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Connections open to the registered ports.
    pub open: usize,
    /// Of those, with a request in flight (layer 7) or, at layer 4, all.
    pub busy: usize,
}

impl Verdict {
    /// Nothing more is coming: the stop scripts may run.
    pub fn idle(&self) -> bool {
        self.busy == 0
    }
}

/// Judge the connections to `ports`. At layer 7 the load balancer owns its
/// connections to the host and sends nothing new on them once the
/// deregistration took effect, so idle keep-alive connections do not hold
/// the drain. At layer 4 (Network LB, Classic TCP/SSL listeners) every
/// connection is a client's own and keeps flowing: any open one is busy.
pub fn judge(conns: &[Conn], ports: &[u16], layer4: bool, quiet: Duration) -> Verdict {
    let mine: Vec<&Conn> = conns.iter().filter(|c| ports.contains(&c.port)).collect();
    let busy = mine.iter().filter(|c| layer4 || c.in_flight(quiet)).count();
    Verdict {
        open: mine.len(),
        busy,
    }
}

/// The host's TCP connections to local `address` (IPv4, also as an
/// IPv4-mapped IPv6 address) on any of `ports`.
pub trait Sockets: Send + Sync {
    /// Read them now.
    fn connections(&self, address: &str, ports: &[u16]) -> std::io::Result<Vec<Conn>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_secs(5);

    fn conn(since_received: u32, since_sent: u32) -> Conn {
        Conn {
            port: 8080,
            established: true,
            unread: 0,
            unsent: 0,
            since_received,
            since_sent,
            received: Some(100),
            sent: Some(200),
        }
    }

    #[test]
    fn a_keep_alive_connection_quiet_since_its_last_response_is_idle() {
        // Request 9.0 s ago, answered 8.9 s ago.
        assert!(!conn(9000, 8900).in_flight(QUIET));
        // Same tick: a fast request answered within a few ms.
        assert!(!conn(9000, 9000).in_flight(QUIET));
        let v = judge(&[conn(9000, 8900), conn(7000, 6000)], &[8080], false, QUIET);
        assert_eq!(v, Verdict { open: 2, busy: 0 });
        assert!(v.idle());
    }

    #[test]
    fn a_request_waiting_for_its_response_is_in_flight_however_long_ago() {
        // Request 60 s ago, last response (to an earlier one) 70 s ago.
        assert!(conn(60_000, 70_000).in_flight(QUIET));
        let v = judge(
            &[conn(9000, 8900), conn(60_000, 70_000)],
            &[8080],
            false,
            QUIET,
        );
        assert_eq!(v, Verdict { open: 2, busy: 1 });
        assert!(!v.idle());
    }

    #[test]
    fn recent_data_queued_bytes_and_handshakes_are_in_flight() {
        assert!(
            conn(1000, 900).in_flight(QUIET),
            "data within the quiet period"
        );
        assert!(
            conn(9000, 900).in_flight(QUIET),
            "a response still streaming"
        );
        let unread = Conn {
            unread: 1,
            ..conn(9000, 8900)
        };
        assert!(unread.in_flight(QUIET), "a request not yet read");
        let unsent = Conn {
            unsent: 10,
            ..conn(9000, 8900)
        };
        assert!(unsent.in_flight(QUIET), "a response not yet acknowledged");
        let opening = Conn {
            established: false,
            ..conn(9000, 9000)
        };
        assert!(opening.in_flight(QUIET), "a connection being opened");
        // Opened and sent its request in one tick, never answered.
        let fresh = Conn {
            sent: Some(0),
            ..conn(9000, 9000)
        };
        assert!(fresh.in_flight(QUIET), "a fresh connection's request");
        let unknown = Conn {
            sent: None,
            ..conn(9000, 9000)
        };
        assert!(unknown.in_flight(QUIET), "a tie without byte counts");
        let nothing = Conn {
            received: Some(0),
            sent: Some(0),
            ..conn(9000, 9000)
        };
        assert!(!nothing.in_flight(QUIET), "opened, nothing sent either way");
    }

    #[test]
    fn at_layer_4_every_open_connection_is_busy() {
        let v = judge(&[conn(9000, 8900)], &[8080], true, QUIET);
        assert_eq!(v, Verdict { open: 1, busy: 1 });
        assert!(judge(&[], &[8080], true, QUIET).idle(), "none open: idle");
    }

    #[test]
    fn only_the_registered_ports_count() {
        let other = Conn {
            port: 22,
            ..conn(10, 10)
        };
        let v = judge(&[other, conn(9000, 8900)], &[8080], false, QUIET);
        assert_eq!(v, Verdict { open: 1, busy: 0 });
    }
}
