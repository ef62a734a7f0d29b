//! A TCP proxy that can spoil what passes through it: cut a response after
//! some bytes (a dropped connection mid-download), flip a byte of one (a
//! corruption in transit that TCP's checksum missed), answer 503 SlowDown
//! without forwarding, or delay. Put in front of moto to test the agent's
//! S3 retries and resumes against a third-party server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::server::runtime;

#[derive(Default)]
struct Faults {
    /// Connections still to cut.
    cuts: AtomicU32,
    /// Bytes of response passed before a cut.
    cut_after: AtomicU64,
    /// Responses still to corrupt.
    corruptions: AtomicU32,
    /// The response byte (headers included) that is flipped.
    corrupt_at: AtomicU64,
    /// Requests still to answer 503.
    unavailable: AtomicU32,
    delay_ms: AtomicU64,
    /// Faults that actually fired.
    fired: AtomicU32,
    connections: AtomicU32,
}

#[derive(Clone)]
pub struct FaultyProxy {
    pub addr: SocketAddr,
    faults: Arc<Faults>,
}

impl FaultyProxy {
    pub fn start(upstream: SocketAddr) -> FaultyProxy {
        let rt = runtime();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let faults: Arc<Faults> = Arc::default();
        let f = faults.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let _ = relay(client, upstream, f).await;
                });
            }
        });
        FaultyProxy { addr, faults }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cut the next `times` connections after `after` bytes of response.
    pub fn cut_responses(&self, times: u32, after: u64) {
        self.faults.cut_after.store(after, Ordering::SeqCst);
        self.faults.cuts.store(times, Ordering::SeqCst);
    }

    /// Flip byte `at` (counted from the status line) of the next `times`
    /// connections' responses that are that long.
    pub fn corrupt_responses(&self, times: u32, at: u64) {
        self.faults.corrupt_at.store(at, Ordering::SeqCst);
        self.faults.corruptions.store(times, Ordering::SeqCst);
    }

    /// Answer the next `times` connections' first request with 503.
    pub fn unavailable(&self, times: u32) {
        self.faults.unavailable.store(times, Ordering::SeqCst);
    }

    pub fn delay(&self, d: Duration) {
        self.faults
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn fired(&self) -> u32 {
        self.faults.fired.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u32 {
        self.faults.connections.load(Ordering::SeqCst)
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, f: Arc<Faults>) -> std::io::Result<()> {
    f.connections.fetch_add(1, Ordering::SeqCst);
    let delay = f.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if take(&f.unavailable) {
        f.fired.fetch_add(1, Ordering::SeqCst);
        let mut buf = vec![0u8; 16 * 1024];
        let _ = client.read(&mut buf).await?;
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        let resp = format!("HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        client.write_all(resp.as_bytes()).await?;
        return Ok(());
    }
    let cut = take(&f.cuts).then(|| f.cut_after.load(Ordering::SeqCst));
    let mut corrupt =
        (f.corruptions.load(Ordering::SeqCst) > 0).then(|| f.corrupt_at.load(Ordering::SeqCst));
    let server = TcpStream::connect(upstream).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    let mut passed = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sr.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if let Some(limit) = cut {
            if passed + n as u64 > limit {
                let keep = (limit - passed) as usize;
                cw.write_all(&buf[..keep]).await?;
                f.fired.fetch_add(1, Ordering::SeqCst);
                up.abort();
                // Dropping both halves resets the client's connection.
                return Ok(());
            }
        }
        if let Some(at) = corrupt {
            if (passed..passed + n as u64).contains(&at) && take(&f.corruptions) {
                buf[(at - passed) as usize] ^= 0x20;
                f.fired.fetch_add(1, Ordering::SeqCst);
                corrupt = None;
            }
        }
        cw.write_all(&buf[..n]).await?;
        passed += n as u64;
    }
    let _ = cw.shutdown().await;
    up.abort();
    Ok(())
}
