//! One HTTP/1.1 client for everything the agent fetches itself (commands
//! API, IMDS, GitHub): rustls with the system's roots, an optional
//! `:proxy_uri:` (CONNECT tunnel), and a deadline on every exchange.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Transport(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid proxy_uri {0:?}: {1}")]
    Proxy(String, String),
    #[error("no TLS roots: {0}")]
    Tls(String),
}

type Direct = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;
type Proxied = Client<HttpsConnector<Tunnel<HttpConnector>>, Full<Bytes>>;

#[derive(Clone)]
enum Inner {
    Direct(Direct),
    Proxied(Proxied),
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Inner,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The TLS configuration every client of this process starts from: the
/// system's roots are read and parsed once, not once per client (each copy
/// of the store is a few hundred KB for the life of the daemon). Clones
/// share the store.
fn tls_config() -> Result<rustls::ClientConfig, HttpError> {
    use hyper_rustls::ConfigBuilderExt;
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let c = rustls::ClientConfig::builder()
        .with_native_roots()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_no_client_auth();
    Ok(CONFIG.get_or_init(|| c).clone())
}

impl HttpClient {
    pub fn new(proxy: Option<&str>, timeout: Duration) -> Result<HttpClient, HttpError> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(Duration::from_secs(10)));
        tcp.set_nodelay(true);
        let tls = || {
            tls_config().map(|c| {
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(c)
                    .https_or_http()
                    .enable_http1()
            })
        };
        // Idle connections are kept only briefly: the agent polls every few
        // seconds and a long-idle socket through a NAT is the usual cause of
        // "connection reset" on the next request.
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(30));
            b.pool_max_idle_per_host(2);
            b
        };
        let inner = match proxy {
            None => Inner::Direct(builder().build(tls()?.wrap_connector(tcp))),
            Some(p) => {
                let uri: Uri = p.parse().map_err(|e: http::uri::InvalidUri| {
                    HttpError::Proxy(p.into(), e.to_string())
                })?;
                if uri.host().is_none() {
                    return Err(HttpError::Proxy(p.into(), "no host".into()));
                }
                let mut tunnel = Tunnel::new(uri.clone(), tcp);
                if let Some(auth) = proxy_auth(&uri) {
                    tunnel = tunnel.with_auth(auth);
                }
                Inner::Proxied(builder().build(tls()?.wrap_connector(tunnel)))
            }
        };
        Ok(HttpClient { inner, timeout })
    }

    /// Send and read the whole answer (at most `limit` bytes).
    pub async fn send(
        &self,
        req: Request<Bytes>,
        limit: usize,
    ) -> Result<Response<Bytes>, HttpError> {
        let t = self.timeout;
        let fut = async {
            let resp = self.stream(req).await?;
            let (parts, body) = resp.into_parts();
            let mut body = body;
            let mut buf = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| HttpError::Transport(chain(&e)))?;
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        return Err(HttpError::TooLarge(limit));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Ok(Response::from_parts(parts, Bytes::from(buf)))
        };
        tokio::time::timeout(t, fut)
            .await
            .map_err(|_| HttpError::Timeout(t))?
    }

    /// Send and return the answer with its body still to be read (downloads).
    pub async fn stream(&self, req: Request<Bytes>) -> Result<Response<Incoming>, HttpError> {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Full::new(body));
        let fut = async {
            match &self.inner {
                Inner::Direct(c) => c.request(req).await,
                Inner::Proxied(c) => c.request(req).await,
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
            .map_err(|e| HttpError::Transport(chain(&e)))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

fn proxy_auth(uri: &Uri) -> Option<http::HeaderValue> {
    use base64::Engine as _;
    let authority = uri.authority()?.as_str();
    let (userinfo, _) = authority.rsplit_once('@')?;
    let token = base64::engine::general_purpose::STANDARD.encode(userinfo);
    http::HeaderValue::from_str(&format!("Basic {token}")).ok()
}

/// An error with its causes, as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
