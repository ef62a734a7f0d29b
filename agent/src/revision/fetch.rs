//! Fetching bundles from S3 and GitHub to `<deployment dir>/bundle.tar`.
//!
//! S3: HEAD pins the object (version and ETag), then the body is fetched
//! as ranged GETs — in parallel parts for large objects — written at their
//! offsets, so memory stays at one chunk per part whatever the size; a
//! dropped connection resumes its part from the last byte written. A
//! single-part ETag (an MD5) is checked against the bytes on disk.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client as S3Client;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;

use super::progress::Progress;
use crate::net::http::{chain, HttpClient};
use crate::spec::{BundleType, Secret};

/// Parts below this size are not worth a second connection.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
const ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("s3://{bucket}/{key}: {message}")]
    S3 {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("GitHub {repo}@{commit}: {message}")]
    GitHub {
        repo: String,
        commit: String,
        message: String,
    },
    #[error("{0}")]
    Io(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: u64,
    pub etag: Option<String>,
    pub version: Option<String>,
    pub parts: usize,
}

pub fn normalize_etag(e: &str) -> String {
    e.trim().trim_matches('"').to_string()
}

pub struct S3Fetch {
    pub client: S3Client,
    pub parts: usize,
    pub part_size: u64,
}

impl S3Fetch {
    pub async fn download(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        etag: Option<&str>,
        dest: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<Fetched, FetchError> {
        let err = |message: String| FetchError::S3 {
            bucket: bucket.into(),
            key: key.into(),
            message,
        };
        let want = etag.map(normalize_etag);
        let head = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| err(format!("HeadObject: {}", chain(&e))))?;
        let size = head.content_length().unwrap_or(0).max(0) as u64;
        let found = head.e_tag().map(normalize_etag);
        if let (Some(w), Some(f)) = (&want, &found) {
            if w != f {
                return Err(err(format!(
                    "the object's ETag is {f}, the deployment expects {w}: the object changed after the deployment was created"
                )));
            }
        }
        // Pin every part to the object HEAD saw, so an overwrite during the
        // download cannot mix two objects.
        let pinned_version = head
            .version_id()
            .map(str::to_string)
            .or(version.map(str::to_string));
        let pinned_etag = found.clone();
        let file = File::create(dest)
            .map_err(|e| FetchError::Io(format!("cannot create {}: {e}", dest.display())))?;
        file.set_len(size)
            .map_err(|e| FetchError::Io(format!("{}: {e}", dest.display())))?;
        let file = Arc::new(file);
        let ranges = split(size, self.part_size.max(1), self.parts.max(1));
        if let Some(p) = &progress {
            p.begin(size, &ranges);
        }
        let mut tasks = tokio::task::JoinSet::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(self.parts.max(1)));
        for (start, end) in ranges.iter().copied() {
            let slots = slots.clone();
            let client = self.client.clone();
            let (b, k) = (bucket.to_string(), key.to_string());
            let (v, e) = (pinned_version.clone(), pinned_etag.clone());
            let f = file.clone();
            let p = progress.clone();
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
                let part = Part {
                    file: &f,
                    start,
                    end,
                    progress: p.as_deref(),
                };
                fetch_range(&client, &b, &k, v, e, part).await
            });
        }
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(m)) => return Err(err(m)),
                Err(j) => return Err(err(format!("download task failed: {j}"))),
            }
        }
        if let Some(e) = &found {
            if is_md5(e) {
                let got = md5_file(dest)
                    .map_err(|e| FetchError::Io(format!("{}: {e}", dest.display())))?;
                if &got != e {
                    return Err(err(format!(
                        "downloaded bytes have MD5 {got}, the ETag says {e}"
                    )));
                }
            }
        }
        Ok(Fetched {
            bytes: size,
            etag: found,
            version: pinned_version,
            parts: ranges.len(),
        })
    }
}

/// `[start, end)` ranges: one for small objects, else parts of at least
/// `part` bytes, at most `max` of them in flight (the rest queue).
pub fn split(size: u64, part: u64, max: usize) -> Vec<(u64, u64)> {
    if size == 0 {
        return vec![(0, 0)];
    }
    if max <= 1 || size <= part + part / 2 {
        return vec![(0, size)];
    }
    let mut v = Vec::new();
    let mut s = 0;
    while s < size {
        let e = (s + part).min(size);
        v.push((s, e));
        s = e;
    }
    v
}

/// One range of the object, where it goes, and who hears of its bytes.
struct Part<'a> {
    file: &'a File,
    start: u64,
    end: u64,
    progress: Option<&'a Progress>,
}

/// Said when the unpack reading the download gave up on it.
const CANCELLED: &str = "cancelled: the unpack stopped reading";

async fn fetch_range(
    client: &S3Client,
    bucket: &str,
    key: &str,
    version: Option<String>,
    etag: Option<String>,
    part: Part<'_>,
) -> Result<(), String> {
    let Part {
        file,
        start,
        end,
        progress,
    } = part;
    let mut at = start;
    let mut attempt = 0;
    loop {
        let from = at;
        let mut req = client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.clone());
        if let Some(e) = &etag {
            req = req.if_match(format!("\"{e}\""));
        }
        if end > start {
            req = req.range(format!("bytes={at}-{}", end - 1));
        }
        let result = async {
            let out = req
                .send()
                .await
                .map_err(|e| format!("GetObject: {}", chain(&e)))?;
            let mut body = out.body;
            while let Some(chunk) = body
                .try_next()
                .await
                .map_err(|e| format!("reading the body: {}", chain(&e)))?
            {
                if at + chunk.len() as u64 > end && end > start {
                    return Err(format!(
                        "S3 sent more than the {} bytes asked for",
                        end - start
                    ));
                }
                if progress.is_some_and(Progress::cancelled) {
                    return Err(CANCELLED.to_string());
                }
                file.write_all_at(&chunk, at)
                    .map_err(|e| format!("writing the bundle: {e}"))?;
                at += chunk.len() as u64;
                if let Some(p) = progress {
                    p.wrote(start, at);
                }
            }
            if at < end {
                return Err(format!("connection ended at byte {at} of {end}"));
            }
            Ok(())
        }
        .await;
        // The SDK checks a response's checksum (when S3 sends one) at its
        // end: after a mismatch every byte of that response is suspect, so
        // the part is fetched again from where the response began, not
        // resumed.
        if result
            .as_ref()
            .is_err_and(|m| m.contains("checksum mismatch"))
        {
            at = from;
            if let Some(p) = progress {
                p.rewind(start, from);
            }
        }
        match result {
            Ok(()) => return Ok(()),
            Err(m)
                if attempt + 1 < ATTEMPTS
                    && !m.contains("PreconditionFailed")
                    && !m.contains("writing")
                    && m != CANCELLED =>
            {
                attempt += 1;
                tracing::warn!(bucket, key, at, end, attempt, error = %m, "S3 part interrupted, resuming");
                tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
            }
            Err(m) => return Err(m),
        }
    }
}

fn is_md5(e: &str) -> bool {
    e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn md5_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut h = openssl::hash::Hasher::new(openssl::hash::MessageDigest::md5())
        .map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]).map_err(std::io::Error::other)?;
    }
    let d = h.finish().map_err(std::io::Error::other)?;
    Ok(d.iter().map(|b| format!("{b:02x}")).collect())
}

/// GitHub: `GET {api}/repos/{account}/{repo}/{tarball|zipball}/{commit}`,
/// following the redirect to the archive host. The token goes only to the
/// API host, never across a redirect, and never into a log.
pub struct GitHubRef<'a> {
    pub account: &'a str,
    pub repository: &'a str,
    pub commit: &'a str,
    pub bundle_type: BundleType,
    pub token: Option<&'a Secret>,
}

pub async fn github_download(
    http: &HttpClient,
    api: &str,
    r: GitHubRef<'_>,
    dest: &Path,
) -> Result<Fetched, FetchError> {
    let GitHubRef {
        account,
        repository,
        commit,
        bundle_type,
        token,
    } = r;
    let err = |message: String| FetchError::GitHub {
        repo: format!("{account}/{repository}"),
        commit: commit.into(),
        message,
    };
    let kind = if bundle_type == BundleType::Zip {
        "zipball"
    } else {
        "tarball"
    };
    let mut url = format!(
        "{}/repos/{account}/{repository}/{kind}/{commit}",
        api.trim_end_matches('/')
    );
    let api_authority = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().cloned());
    for _ in 0..5 {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| err(format!("bad URL {url}: {e}")))?;
        let mut b = Request::builder()
            .uri(&uri)
            .header("user-agent", "codedeploy-agent-rs")
            .header("accept", "application/vnd.github+json");
        if let (Some(t), true) = (token, uri.authority().cloned() == api_authority) {
            b = b.header("authorization", format!("token {}", t.0));
        }
        let req = b.body(Bytes::new()).map_err(|e| err(e.to_string()))?;
        let resp = http.stream(req).await.map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| err(format!("HTTP {status} without a Location")))?;
            url = if loc.starts_with('/') {
                format!(
                    "{}://{}{loc}",
                    uri.scheme_str().unwrap_or("https"),
                    uri.authority().map(|a| a.as_str()).unwrap_or("")
                )
            } else {
                loc.to_string()
            };
            continue;
        }
        if status != StatusCode::OK {
            let hint = match status.as_u16() {
                401 | 403 => " (is the repository private? the deployment's GitHub connection must grant access)",
                404 => " (no such repository or commit, or a private repository without a token)",
                _ => "",
            };
            return Err(err(format!("HTTP {status}{hint}")));
        }
        let file = File::create(dest)
            .map_err(|e| FetchError::Io(format!("cannot create {}: {e}", dest.display())))?;
        let mut body = resp.into_body();
        let mut at = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| err(format!("reading the archive: {}", chain(&e))))?;
            if let Ok(data) = frame.into_data() {
                file.write_all_at(&data, at)
                    .map_err(|e| FetchError::Io(format!("{}: {e}", dest.display())))?;
                at += data.len() as u64;
            }
        }
        return Ok(Fetched {
            bytes: at,
            etag: None,
            version: None,
            parts: 1,
        });
    }
    Err(err("too many redirects".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_object_exactly() {
        assert_eq!(split(0, 8, 4), vec![(0, 0)]);
        assert_eq!(split(10, 8, 4), vec![(0, 10)]);
        assert_eq!(split(100, 8, 1), vec![(0, 100)]);
        let p = split(100, 8, 4);
        assert_eq!(p.first(), Some(&(0, 8)));
        assert_eq!(p.last(), Some(&(96, 100)));
        assert!(p.windows(2).all(|w| w[0].1 == w[1].0));
    }

    #[test]
    fn etags() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert!(is_md5("9e107d9d372bb6826bd81d3542a419d6"));
        assert!(!is_md5("9e107d9d372bb6826bd81d3542a419d6-3"));
    }
}
