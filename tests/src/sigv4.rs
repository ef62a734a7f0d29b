//! SigV4 verification, written from the public specification (not from the
//! agent's signer): canonical request over the headers the client says it
//! signed, the scope's region and service, the clock skew limit, and the
//! session token when the credentials carry one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use openssl::hash::{hash, MessageDigest};
use openssl::pkey::PKey;
use openssl::sign::Signer;

#[derive(Clone, Debug)]
pub struct Secret {
    pub secret: String,
    pub token: Option<String>,
    /// What the credentials stand for (an instance's host identifier, or
    /// `operator`).
    pub principal: String,
}

/// Credentials the stand-ins accept, shared by the control plane and the
/// IMDS servers that hand them out.
#[derive(Clone, Default)]
pub struct Keyring(Arc<Mutex<HashMap<String, Secret>>>);

impl Keyring {
    pub fn add(&self, access_key: &str, secret: Secret) {
        self.0
            .lock()
            .unwrap()
            .insert(access_key.to_string(), secret);
    }

    pub fn get(&self, access_key: &str) -> Option<Secret> {
        self.0.lock().unwrap().get(access_key).cloned()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&hash(MessageDigest::sha256(), b).expect("sha256"))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = PKey::hmac(key).expect("hmac key");
    let mut s = Signer::new(MessageDigest::sha256(), &k).expect("signer");
    s.update(data).expect("hmac");
    s.sign_to_vec().expect("hmac")
}

/// Verify `req` for `service` in `region`; returns the caller's principal.
pub fn verify(
    req: &Request<Bytes>,
    keys: &Keyring,
    region: &str,
    service: &str,
) -> Result<String, String> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("missing Authorization")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut credential = "";
    let mut signed = "";
    let mut signature = "";
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = v;
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = v;
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = v;
        }
    }
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" {
        return Err(format!("bad credential scope {credential:?}"));
    }
    let (akid, date, s_region, s_service) = (scope[0], scope[1], scope[2], scope[3]);
    if s_region != region {
        return Err(format!("signed for region {s_region}, expected {region}"));
    }
    if s_service != service {
        return Err(format!(
            "signed for service {s_service}, expected {service}"
        ));
    }
    let key = keys
        .get(akid)
        .ok_or_else(|| format!("unknown access key {akid}"))?;
    let amz_date = req
        .headers()
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or("missing X-Amz-Date")?;
    if !amz_date.starts_with(date) {
        return Err("X-Amz-Date does not match the credential scope".into());
    }
    let t = chrono_free_parse(amz_date).ok_or("bad X-Amz-Date")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if (now - t).abs() > 300 {
        return Err("request time is too skewed".into());
    }
    let names: Vec<&str> = signed.split(';').collect();
    if !names.contains(&"host") {
        return Err("host is not signed".into());
    }
    if let Some(tok) = &key.token {
        let sent = req
            .headers()
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        if sent != Some(tok.as_str()) || !names.contains(&"x-amz-security-token") {
            return Err("missing or wrong session token".into());
        }
    }
    let mut canon_headers = String::new();
    for n in &names {
        let values: Vec<String> = req
            .headers()
            .get_all(*n)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(format!("signed header {n} is missing"));
        }
        canon_headers.push_str(&format!("{n}:{}\n", values.join(",")));
    }
    let payload_hash = match req
        .headers()
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some(h) if h != "UNSIGNED-PAYLOAD" => {
            if h != sha256_hex(req.body()) {
                return Err("x-amz-content-sha256 does not match the body".into());
            }
            h.to_string()
        }
        _ => sha256_hex(req.body()),
    };
    let path = req.uri().path();
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method().as_str(),
        if path.is_empty() { "/" } else { path },
        canonical_query(req.uri().query().unwrap_or("")),
        canon_headers,
        signed,
        payload_hash
    );
    let scope_str = format!("{date}/{s_region}/{s_service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope_str}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac(format!("AWS4{}", key.secret).as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, s_region.as_bytes());
    let k_service = hmac(&k_region, s_service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let expected = hex(&hmac(&k_signing, to_sign.as_bytes()));
    if expected != signature {
        return Err("signature does not match".into());
    }
    Ok(key.principal)
}

fn canonical_query(q: &str) -> String {
    if q.is_empty() {
        return String::new();
    }
    let mut parts: Vec<(String, String)> = q
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    parts.sort();
    parts
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYYMMDDTHHMMSSZ` to seconds since the epoch.
fn chrono_free_parse(s: &str) -> Option<i64> {
    if s.len() != 16 {
        return None;
    }
    let n = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (h, mi, se) = (n(9, 11)?, n(11, 13)?, n(13, 15)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_amz_dates() {
        assert_eq!(super::chrono_free_parse("19700101T000000Z"), Some(0));
        assert_eq!(
            super::chrono_free_parse("20261123T120000Z"),
            Some(1_795_435_200)
        );
    }
}
