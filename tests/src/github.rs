//! A loopback GitHub: `GET /repos/{owner}/{repo}/{tarball|zipball}/{sha}`
//! answers 302 to a separate archive path (as api.github.com redirects to
//! codeload), private repositories need `Authorization: token ...` on the
//! API path, and the archive host (another port here, another host there)
//! must never see the token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::server::{self, text_response};

#[derive(Default)]
struct Repos {
    /// (owner/repo, sha, "tarball"|"zipball") -> bytes
    archives: HashMap<(String, String, String), Vec<u8>>,
    private: HashMap<String, String>,
    /// Authorization headers seen on archive downloads (should be none).
    leaked: Vec<String>,
    api_requests: u32,
}

#[derive(Clone)]
pub struct GitHub {
    pub addr: SocketAddr,
    repos: Arc<Mutex<Repos>>,
}

impl GitHub {
    pub fn start() -> GitHub {
        let repos: Arc<Mutex<Repos>> = Arc::default();
        let r = repos.clone();
        let addr_cell: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let a = addr_cell.clone();
        let handler: server::Handler = Arc::new(move |req| {
            let path = req.uri().path().to_string();
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut repos = r.lock().unwrap();
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let reply = match parts.as_slice() {
                ["repos", owner, repo, kind @ ("tarball" | "zipball"), sha] => {
                    repos.api_requests += 1;
                    let full = format!("{owner}/{repo}");
                    let allowed = match repos.private.get(&full) {
                        Some(tok) => auth.as_deref() == Some(&format!("token {tok}")),
                        None => true,
                    };
                    let key = (full.clone(), sha.to_string(), kind.to_string());
                    if !allowed || !repos.archives.contains_key(&key) {
                        // GitHub hides private repositories behind 404.
                        text_response(404, "{\"message\":\"Not Found\"}")
                    } else {
                        let host = a.lock().unwrap().expect("address");
                        http::Response::builder()
                            .status(302)
                            .header(
                                "location",
                                format!("http://{host}/codeload/{full}/{kind}/{sha}"),
                            )
                            .body(bytes::Bytes::new())
                            .unwrap()
                    }
                }
                ["codeload", owner, repo, kind, sha] => {
                    if let Some(a) = auth {
                        repos.leaked.push(a);
                    }
                    match repos.archives.get(&(
                        format!("{owner}/{repo}"),
                        sha.to_string(),
                        kind.to_string(),
                    )) {
                        Some(b) => text_response(200, b.clone()),
                        None => text_response(404, ""),
                    }
                }
                _ => text_response(404, ""),
            };
            Box::pin(async move { Ok(reply) })
        });
        // Two hosts, as api.github.com and codeload.github.com: a
        // credential must not cross from one to the other.
        let addr = server::serve(handler.clone());
        let codeload = server::serve(handler);
        *addr_cell.lock().unwrap() = Some(codeload);
        GitHub { addr, repos }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Publish `bytes` as the tarball (tgz) or zipball of `repo` at `sha`.
    pub fn publish(&self, repo: &str, sha: &str, kind: &str, bytes: Vec<u8>) {
        self.repos
            .lock()
            .unwrap()
            .archives
            .insert((repo.into(), sha.into(), kind.into()), bytes);
    }

    pub fn make_private(&self, repo: &str, token: &str) {
        self.repos
            .lock()
            .unwrap()
            .private
            .insert(repo.into(), token.into());
    }

    pub fn leaked_authorization(&self) -> Vec<String> {
        self.repos.lock().unwrap().leaked.clone()
    }

    pub fn api_requests(&self) -> u32 {
        self.repos.lock().unwrap().api_requests
    }
}
