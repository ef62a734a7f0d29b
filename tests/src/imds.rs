//! Instance metadata for one simulated EC2 instance: the IMDSv2 token flow
//! (tokens required unless v1 is allowed), instance id, identity document,
//! and role credentials that the control plane accepts for this instance
//! only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::server::{self, text_response};
use crate::sigv4::{Keyring, Secret};

pub struct Imds {
    pub addr: SocketAddr,
    pub instance_id: String,
    hits: Arc<AtomicU32>,
    v1_hits: Arc<AtomicU32>,
}

/// How the instance's metadata service is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImdsMode {
    /// HttpTokens=required: every read needs a session token.
    V2Required,
    /// No session tokens are handed out (an old or locked-down endpoint):
    /// only IMDSv1 reads work.
    V1Only,
}

impl Imds {
    /// Serve metadata for `instance_id`; its role credentials are added to
    /// `keys` with the instance's host identifier as principal.
    pub fn start(
        instance_id: &str,
        region: &str,
        account: &str,
        keys: &Keyring,
        mode: ImdsMode,
        private_ip: &str,
    ) -> Imds {
        let allow_v1 = mode != ImdsMode::V2Required;
        let host = format!("arn:aws:ec2:{region}:{account}:instance/{instance_id}");
        let akid = format!(
            "ASIA{}",
            instance_id.trim_start_matches("i-").to_uppercase()
        );
        let secret = format!("secret-of-{instance_id}");
        let token = format!("session-token-of-{instance_id}");
        keys.add(
            &akid,
            Secret {
                secret: secret.clone(),
                token: Some(token.clone()),
                principal: host,
            },
        );
        let session = format!("imds-token-{instance_id}");
        let doc = json!({"accountId": account, "region": region, "instanceId": instance_id, "availabilityZone": format!("{region}a"), "instanceType": "t3.micro", "imageId": "ami-0testbed", "architecture": "x86_64", "privateIp": private_ip, "version": "2017-09-30"});
        let expiration = chrono_like_iso(
            std::time::SystemTime::now() + std::time::Duration::from_secs(6 * 3600),
        );
        let creds = json!({"Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z", "Type": "AWS-HMAC", "AccessKeyId": akid, "SecretAccessKey": secret, "Token": token, "Expiration": expiration});
        let id = instance_id.to_string();
        let hits = Arc::new(AtomicU32::new(0));
        let v1_hits = Arc::new(AtomicU32::new(0));
        let (h, v1) = (hits.clone(), v1_hits.clone());
        let tokens = Arc::new(Mutex::new(0u32));
        let addr = server::serve(Arc::new(move |req| {
            h.fetch_add(1, Ordering::Relaxed);
            let path = req.uri().path().to_string();
            let method = req.method().clone();
            let has_token = req
                .headers()
                .get("x-aws-ec2-metadata-token")
                .and_then(|v| v.to_str().ok())
                == Some(session.as_str());
            let reply = if path == "/latest/api/token" {
                if mode == ImdsMode::V1Only {
                    text_response(403, "")
                } else if method != http::Method::PUT
                    || req
                        .headers()
                        .get("x-aws-ec2-metadata-token-ttl-seconds")
                        .is_none()
                {
                    text_response(400, "")
                } else {
                    *tokens.lock().unwrap() += 1;
                    let ttl = req
                        .headers()
                        .get("x-aws-ec2-metadata-token-ttl-seconds")
                        .cloned()
                        .unwrap();
                    let mut r = text_response(200, session.clone());
                    r.headers_mut()
                        .insert("x-aws-ec2-metadata-token-ttl-seconds", ttl);
                    r
                }
            } else if !has_token && !allow_v1 {
                text_response(401, "")
            } else {
                if !has_token {
                    v1.fetch_add(1, Ordering::Relaxed);
                }
                match path.as_str() {
                    "/latest/meta-data/instance-id" => text_response(200, id.clone()),
                    "/latest/dynamic/instance-identity/document" => {
                        text_response(200, doc.to_string())
                    }
                    "/latest/meta-data/iam/security-credentials/"
                    | "/latest/meta-data/iam/security-credentials" => {
                        text_response(200, "testbed-role")
                    }
                    "/latest/meta-data/iam/security-credentials/testbed-role" => {
                        text_response(200, creds.to_string())
                    }
                    _ => text_response(404, ""),
                }
            };
            Box::pin(async move { Ok(reply) })
        }));
        Imds {
            addr,
            instance_id: instance_id.to_string(),
            hits,
            v1_hits,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> u32 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn v1_requests(&self) -> u32 {
        self.v1_hits.load(Ordering::Relaxed)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` without a date library.
fn chrono_like_iso(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_435_200);
        assert_eq!(super::chrono_like_iso(t), "2026-11-23T12:00:00Z");
    }
}
