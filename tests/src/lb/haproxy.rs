//! The data plane: one HAProxy process, a frontend and a backend per load
//! balancer (Classic LB or target group), and a fixed set of server slots per
//! backend declared in maintenance. The control plane drives it over the
//! runtime API socket; HAProxy's own health checks stay off (docs/testbed.md, data plane).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const SLOTS: usize = 8;

pub struct HaProxy {
    child: Child,
    pub socket: PathBuf,
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        // The watchdog shell stops HAProxy on TERM (see start).
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// One load balancer in HAProxy: a frontend and its backend.
#[derive(Clone, Debug)]
pub struct Listener {
    pub name: String,
    pub port: u16,
    /// Keep connections to the targets open between requests and reuse
    /// them for any client, as an Application LB does; otherwise one
    /// connection per request (`http-server-close`).
    pub keep_alive: bool,
    /// Layer 4 (`mode tcp`), as a Network LB: each client connection goes
    /// to one target for its whole life.
    pub tcp: bool,
}

/// Server state as the runtime API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Ready,
    Drain,
    Maint,
}

impl HaProxy {
    /// Start HAProxy with one frontend and backend per listener.
    pub fn start(dir: &Path, listeners: &[Listener]) -> HaProxy {
        let socket = dir.join("haproxy.sock");
        let mut cfg = String::new();
        let _ = write!(
            cfg,
            "global\n  stats socket {} mode 600 level admin\n  maxconn 4000\n\n\
             defaults\n  mode http\n  retries 0\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  timeout http-keep-alive 10s\n  option http-server-close\n\n",
            socket.display()
        );
        // leastconn is ALB's least_outstanding_requests: requests in flight
        // spread evenly, so each instance holds some of the load's slow
        // requests whenever its drain begins (round robin leaves an
        // instance without one often enough to make that check flaky).
        for l in listeners {
            let (name, port) = (&l.name, l.port);
            // Both sides must leave http-server-close for a server
            // connection to outlive its request; idle ones are kept for a
            // minute, an Application LB's default idle timeout.
            let (reuse, pool) = if l.tcp {
                ("  mode tcp\n", "")
            } else if l.keep_alive {
                (
                    "  no option http-server-close\n  option http-keep-alive\n  http-reuse always\n",
                    " pool-purge-delay 60s",
                )
            } else {
                ("", "")
            };
            let _ = write!(
                cfg,
                "frontend f_{name}\n  bind 127.0.0.1:{port}\n{reuse}  default_backend b_{name}\n\nbackend b_{name}\n  balance leastconn\n{reuse}"
            );
            for s in 0..SLOTS {
                let _ = writeln!(cfg, "  server s{s} 127.0.0.1:9 disabled{pool}");
            }
            cfg.push('\n');
        }
        let path = dir.join("haproxy.cfg");
        fs::write(&path, cfg).expect("haproxy.cfg");
        let log = fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
        // HAProxy under a watchdog shell, as moto is: it goes when the
        // plane is dropped (TERM to the shell) and when this test process
        // ends in any way, so no test leaves one running.
        let script = format!(
            "command -v haproxy >/dev/null || exit 127\nhaproxy -db -f '{cfg}' & h=$!\ntrap 'kill $h 2>/dev/null; exit 0' TERM\nwhile kill -0 {me} 2>/dev/null && kill -0 $h 2>/dev/null; do sleep 1; done\nkill $h 2>/dev/null\n",
            cfg = path.display(),
            me = std::process::id()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sh");
        let h = HaProxy { child, socket };
        crate::wait_until(Duration::from_secs(10), "HAProxy runtime socket", || {
            h.command("show info").is_ok()
        });
        h
    }

    pub fn command(&self, cmd: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(cmd.as_bytes())?;
        s.write_all(b"\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    pub fn point(&self, backend: &str, slot: usize, ip: &str, port: u16) {
        let _ = self.command(&format!(
            "set server b_{backend}/s{slot} addr {ip} port {port}"
        ));
    }

    pub fn set(&self, backend: &str, slot: usize, state: Slot) {
        let st = match state {
            Slot::Ready => "ready",
            Slot::Drain => "drain",
            Slot::Maint => "maint",
        };
        let _ = self.command(&format!("set server b_{backend}/s{slot} state {st}"));
    }

    /// Cut whatever is still open to a server (the AWS timeout expired).
    pub fn cut(&self, backend: &str, slot: usize) {
        let _ = self.command(&format!("shutdown sessions server b_{backend}/s{slot}"));
    }

    /// Open connections to each server, in use or idle in the pool, per
    /// (backend, slot), from `show servers conn`.
    pub fn server_connections(&self) -> Vec<(String, usize, u64)> {
        let Ok(out) = self.command("show servers conn") else {
            return Vec::new();
        };
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                // b_name/sN bkid/svid addr port - purge used_cur used_max
                // need_est unsafe_nb safe_nb idle_lim idle_cur ...
                let f: Vec<&str> = l.split_whitespace().collect();
                let (b, s) = f.first()?.split_once('/')?;
                let b = b.strip_prefix("b_")?;
                let s: usize = s.strip_prefix('s')?.parse().ok()?;
                let used: u64 = f.get(6)?.parse().ok()?;
                let idle: u64 = f.get(12)?.parse().ok()?;
                Some((b.to_string(), s, used + idle))
            })
            .collect()
    }

    /// Current sessions per (backend, slot) from `show stat`.
    pub fn sessions(&self) -> Vec<(String, usize, u64)> {
        let Ok(csv) = self.command("show stat") else {
            return Vec::new();
        };
        csv.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                let b = f.first()?.strip_prefix("b_")?;
                let s: usize = f.get(1)?.strip_prefix('s')?.parse().ok()?;
                let scur: u64 = f.get(4)?.parse().ok()?;
                Some((b.to_string(), s, scur))
            })
            .collect()
    }
}
