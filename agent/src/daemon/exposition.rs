//! The daemon's metrics, out: rewritten to `:metrics_textfile:` after each
//! poll and command, and served on `:metrics_listen:` (loopback only) to
//! whoever scrapes `GET /metrics`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Agent, AGENT_VERSION};
use crate::metrics;

/// A scrape request is one line and a few headers: more is not one.
const MAX_REQUEST: usize = 8 * 1024;

impl Agent {
    fn metrics_text(&self) -> String {
        let drained = self
            .traffic
            .as_ref()
            .map_or(0, |t| t.drainer.store.pending().len());
        metrics::get().render(AGENT_VERSION, drained)
    }

    /// Rewrite the textfile, if one is configured; a failure is said once.
    pub(super) fn publish_metrics(&self) {
        let Some(path) = &self.config.metrics_textfile else {
            return;
        };
        match metrics::write_textfile(path, &self.metrics_text()) {
            Ok(()) => self.metrics_warned.store(false, Ordering::Relaxed),
            Err(e) if !self.metrics_warned.swap(true, Ordering::Relaxed) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the metrics textfile");
            }
            Err(_) => {}
        }
    }

    /// Serve `GET /metrics` on `addr` until the agent stops.
    pub(super) async fn serve_metrics(self: Arc<Self>, addr: SocketAddr) {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen for metrics scrapes");
                return;
            }
        };
        tracing::info!(%addr, "serving metrics at /metrics");
        let mut stop = self.shutdown.clone();
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok((stream, _)) = conn else { continue };
            let me = self.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), me.answer(stream)).await;
            });
        }
    }

    async fn answer(&self, mut s: TcpStream) -> std::io::Result<()> {
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let line = req.split(|b| *b == b'\n').next().unwrap_or_default();
        let (status, body) =
            if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET /metrics?") {
                ("200 OK", self.metrics_text())
            } else {
                ("404 Not Found", "GET /metrics\n".to_string())
            };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        s.shutdown().await
    }
}
