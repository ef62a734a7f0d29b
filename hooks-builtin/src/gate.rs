//! The local health gate: before anything is registered again, the new
//! application must answer here the way the load balancer will ask it.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::journal::HealthCheck;

/// What the health gate probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP(S) GET.
    Http {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The path.
        path: String,
    },
    /// A TCP connect.
    Tcp {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Http { host, port, path } => write!(f, "http://{host}:{port}{path}"),
            Probe::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// The probe an LB health check implies, against this host's address.
/// HTTPS checks are probed as TCP connects: the gate proves the application
/// listens, the LB's own check proves the rest.
pub fn from_health_check(hc: &HealthCheck, traffic_port: u16, host: &str) -> Probe {
    let port = hc.port.unwrap_or(traffic_port);
    if hc.protocol == "HTTP" {
        Probe::Http {
            host: host.to_string(),
            port,
            path: if hc.path.is_empty() {
                "/".into()
            } else {
                hc.path.clone()
            },
        }
    } else {
        Probe::Tcp {
            host: host.to_string(),
            port,
        }
    }
}

/// `http://host[:port]/path` or `tcp://host:port`.
pub fn parse_url(url: &str) -> Option<Probe> {
    if let Some(rest) = url.strip_prefix("tcp://") {
        let (h, p) = rest.trim_end_matches('/').rsplit_once(':')?;
        return Some(Probe::Tcp {
            host: h.to_string(),
            port: p.parse().ok()?,
        });
    }
    let rest = url.strip_prefix("http://")?;
    let (hp, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hp.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (hp, 80),
    };
    Some(Probe::Http {
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// An ELBv2 matcher (`200`, `200,202`, `200-299`) as inclusive ranges.
pub fn parse_matcher(m: &str) -> Vec<(u16, u16)> {
    m.split(',')
        .filter_map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
                None => part.parse().ok().map(|c| (c, c)),
            }
        })
        .collect()
}

/// How the gate judges.
pub struct Settings {
    /// Accepted status ranges, inclusive.
    pub expect: Vec<(u16, u16)>,
    /// Passes in a row needed.
    pub successes: u32,
    /// Between probes.
    pub interval: Duration,
    /// Per probe.
    pub request_timeout: Duration,
    /// In all.
    pub timeout: Duration,
}

/// One probe: `Ok(status)` (0 for TCP) or why it failed.
pub async fn probe_once(p: &Probe, limit: Duration) -> Result<u16, String> {
    let fut = async {
        match p {
            Probe::Tcp { host, port } => TcpStream::connect((host.as_str(), *port))
                .await
                .map(|_| 0)
                .map_err(|e| e.to_string()),
            Probe::Http { host, port, path } => {
                let mut s = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| e.to_string())?;
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: codedeploy-agent-health-gate\r\nConnection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut buf = [0u8; 64];
                let mut n = 0;
                while n < 12 {
                    let k = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                let line = String::from_utf8_lossy(&buf[..n]);
                line.split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("not an HTTP response: {line:?}"))
            }
        }
    };
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", limit.as_secs_f32())))
}

/// Probe until `successes` consecutive passes; `Err` names the last failure.
pub async fn wait_healthy(p: &Probe, s: &Settings) -> Result<(u32, Duration), String> {
    let t0 = Instant::now();
    let mut streak = 0;
    let mut probes = 0;
    let mut last = String::from("never probed");
    loop {
        probes += 1;
        match probe_once(p, s.request_timeout).await {
            Ok(code)
                if matches!(p, Probe::Tcp { .. })
                    || s.expect.iter().any(|(a, b)| (*a..=*b).contains(&code)) =>
            {
                streak += 1;
                if streak >= s.successes {
                    return Ok((probes, t0.elapsed()));
                }
            }
            Ok(code) => {
                streak = 0;
                last = format!("status {code}");
            }
            Err(e) => {
                streak = 0;
                last = e;
            }
        }
        if t0.elapsed() + s.interval > s.timeout {
            return Err(format!(
                "{p} not healthy after {} s ({probes} probes; last: {last})",
                s.timeout.as_secs()
            ));
        }
        tokio::time::sleep(s.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_matchers() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/health"),
            Some(Probe::Http {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/health".into()
            })
        );
        assert_eq!(
            parse_url("tcp://10.0.0.1:22"),
            Some(Probe::Tcp {
                host: "10.0.0.1".into(),
                port: 22
            })
        );
        assert_eq!(parse_url("ftp://x"), None);
        assert_eq!(parse_matcher("200,202-204"), vec![(200, 200), (202, 204)]);
    }

    #[test]
    fn health_check_implies_the_probe() {
        let hc = HealthCheck {
            protocol: "HTTP".into(),
            port: None,
            path: "/ok".into(),
            matcher: "200".into(),
            interval: 5,
            timeout: 2,
            healthy_threshold: 3,
        };
        assert_eq!(
            from_health_check(&hc, 9000, "10.1.2.3").to_string(),
            "http://10.1.2.3:9000/ok"
        );
        let tcp = HealthCheck {
            protocol: "HTTPS".into(),
            port: Some(443),
            ..hc
        };
        assert_eq!(
            from_health_check(&tcp, 9000, "h").to_string(),
            "tcp://h:443"
        );
    }

    #[tokio::test]
    async fn probes_a_real_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(b"HTTP/1.1 503 Nope\r\n\r\n").await;
            }
        });
        let p = Probe::Http {
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
        };
        assert_eq!(probe_once(&p, Duration::from_secs(2)).await, Ok(503));
        let s = Settings {
            expect: vec![(200, 399)],
            successes: 1,
            interval: Duration::from_millis(50),
            request_timeout: Duration::from_secs(1),
            timeout: Duration::from_millis(200),
        };
        let err = wait_healthy(&p, &s).await.unwrap_err();
        assert!(err.contains("status 503"), "{err}");
    }
}
