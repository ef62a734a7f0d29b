//! systemd readiness notification (`sd_notify`), without libsystemd: one
//! datagram to `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace). Outside systemd it does nothing.

use std::os::unix::net::UnixDatagram;

pub fn notify(state: &str) {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let addr = addr.to_string_lossy().into_owned();
    let sent = if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &addr)
    };
    if let Err(e) = sent {
        tracing::warn!(state, error = %e, "sd_notify failed");
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when systemd
/// set one for this process.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}
