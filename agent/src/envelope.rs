//! The deployment specification envelope: check the PKCS7 signature, then
//! hand the signed JSON to `DeploymentSpec::from_json`.
//!
//! Two modes. Neither official agent checks who signed a specification:
//! Ruby 1.8.1 calls verify with NOVERIFY and ignores its result, 2.x uses
//! NOVERIFY with an empty store; and every intermediate of the chain they
//! ship expired in 2020-2021. So by default (`Compatible`) this agent
//! accepts what 2.x accepts and is no weaker: the signature over the
//! content must verify with the certificate the message carries, and the
//! result is checked, so a tampered specification is refused. `Strict` adds
//! what no real specification has been shown to pass here: the message
//! carries exactly one certificate, it chains to the trusted certificates
//! alone (NOCHAIN, validity dates included), and its subject is the
//! CodeDeploy signer of the host's region. In the default mode the strict
//! verdict is still worked out and reported, so an operator can turn strict
//! mode on with evidence (README, "Signed specifications").

use std::collections::VecDeque;
use std::sync::Mutex;

use base64::Engine as _;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::X509;

use crate::spec::{DeploymentSpec, SpecError};

/// The chain the official agents ship (all four certificates), embedded so
/// a packaging mistake cannot leave strict mode without a trust anchor.
pub const AWS_SIGNER_CHAIN: &str =
    include_str!("../certs/host-agent-deployment-signer-ca-chain.pem");

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("unsupported deployment specification format {0:?}")]
    Format(String),
    #[error("the deployment specification is not PKCS7: {0}")]
    Decode(String),
    #[error("signature verification of the deployment specification failed: {0}")]
    Signature(String),
    #[error("strict verification refused the deployment specification: {0}")]
    Strict(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot load the trusted certificate chain {0}")]
    Trust(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As the official 2.x: the signature, with the carried certificate.
    Compatible,
    /// Also the chain, the certificate count and the signer's subject.
    Strict,
}

/// What strict mode decides of a specification: `None` accepts, `Some`
/// says why it refuses.
pub type StrictVerdict = Option<String>;

/// A specification whose envelope was accepted.
#[derive(Clone, Debug)]
pub struct Opened {
    pub spec: DeploymentSpec,
    pub strict: StrictVerdict,
}

/// Verifies envelopes for one region.
pub struct Verifier {
    store: X509Store,
    /// Signature checks with the carried certificate only.
    empty: X509Store,
    region: String,
    mode: Mode,
    /// Tests only (`:allow_unsigned_specs:`): accept `TEXT/JSON`.
    allow_text: bool,
    /// Envelopes verified lately, byte for byte, with what they held. Every
    /// command of a deployment fetches the same envelope, and parsing it
    /// (OpenSSL 3 decodes the carried key) was the largest part of a
    /// lifecycle event's own time; the same bytes against the same store
    /// cannot verify differently.
    recent: Mutex<VecDeque<(String, Verified)>>,
}

/// The signed JSON and the strict verdict on it.
type Verified = (String, StrictVerdict);

/// How many verified envelopes are kept, and the largest one kept.
const RECENT: usize = 8;
const RECENT_MAX_BYTES: usize = 64 << 10;

fn trust(e: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::Trust(e.to_string())
}

impl Verifier {
    /// `chain_pem`: the certificates strict mode trusts (PEM, one or more).
    pub fn new(
        chain_pem: &[u8],
        region: &str,
        mode: Mode,
        allow_text: bool,
    ) -> Result<Verifier, EnvelopeError> {
        let certs = X509::stack_from_pem(chain_pem).map_err(trust)?;
        if certs.is_empty() {
            return Err(trust("it holds no certificate"));
        }
        let mut b = X509StoreBuilder::new().map_err(trust)?;
        for c in certs {
            b.add_cert(c).map_err(trust)?;
        }
        Ok(Verifier {
            store: b.build(),
            empty: X509StoreBuilder::new().map_err(trust)?.build(),
            region: region.to_string(),
            mode,
            allow_text,
            recent: Mutex::new(VecDeque::new()),
        })
    }

    /// Verify `payload` of format `format` and parse the specification.
    pub fn open(&self, format: &str, payload: &str) -> Result<Opened, EnvelopeError> {
        let (json, strict) = match format {
            "PKCS7/JSON" => self.verify(payload)?,
            "TEXT/JSON" if self.allow_text => (
                payload.to_string(),
                Some("the specification is not signed".into()),
            ),
            other => return Err(EnvelopeError::Format(other.to_string())),
        };
        if let (Mode::Strict, Some(why)) = (self.mode, &strict) {
            return Err(EnvelopeError::Strict(why.clone()));
        }
        Ok(Opened {
            spec: DeploymentSpec::from_json(&json)?,
            strict,
        })
    }

    fn verify(&self, payload: &str) -> Result<Verified, EnvelopeError> {
        let hit = self.recent.lock().ok().and_then(|r| {
            r.iter()
                .find(|(p, _)| p.as_str() == payload)
                .map(|(_, v)| v.clone())
        });
        if let Some(v) = hit {
            return Ok(v);
        }
        let v = self.verify_afresh(payload)?;
        if payload.len() <= RECENT_MAX_BYTES {
            if let Ok(mut r) = self.recent.lock() {
                if r.len() >= RECENT {
                    r.pop_front();
                }
                r.push_back((payload.to_string(), v.clone()));
            }
        }
        Ok(v)
    }

    fn verify_afresh(&self, payload: &str) -> Result<Verified, EnvelopeError> {
        let p7 = decode(payload)?;
        let none: Stack<X509> =
            Stack::new().map_err(|e| EnvelopeError::Signature(e.to_string()))?;
        let mut content = Vec::new();
        p7.verify(
            &none,
            &self.empty,
            None,
            Some(&mut content),
            Pkcs7Flags::NOVERIFY,
        )
        .map_err(|e| EnvelopeError::Signature(e.to_string()))?;
        let json = String::from_utf8(content)
            .map_err(|_| EnvelopeError::Decode("the signed content is not UTF-8".into()))?;
        Ok((json, self.strict_verdict(&p7, &none)))
    }

    fn strict_verdict(&self, p7: &Pkcs7, none: &Stack<X509>) -> StrictVerdict {
        let signed = p7.signed()?;
        let carried: Vec<&openssl::x509::X509Ref> = match signed.certificates() {
            Some(s) => s.iter().collect(),
            None => Vec::new(),
        };
        if carried.len() != 1 {
            return Some(format!(
                "the message must carry exactly one signer certificate, it carries {}",
                carried.len()
            ));
        }
        if let Err(e) = p7.verify(none, &self.store, None, None, Pkcs7Flags::NOCHAIN) {
            return Some(format!(
                "the signer does not chain to the trusted certificates: {e}"
            ));
        }
        let found = subject_line(carried[0]);
        signer_mismatch(&found, &self.region)
    }
}

fn decode(payload: &str) -> Result<Pkcs7, EnvelopeError> {
    let t = payload.trim();
    if t.starts_with("-----BEGIN") {
        return Pkcs7::from_pem(t.as_bytes()).map_err(|e| EnvelopeError::Decode(e.to_string()));
    }
    let compact: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| EnvelopeError::Decode(format!("neither PEM nor base64 DER: {e}")))?;
    Pkcs7::from_der(&der).map_err(|e| EnvelopeError::Decode(e.to_string()))
}

/// Why `found` (an OpenSSL one-line subject) is not the CodeDeploy signer
/// of `region`, or `None` when it is.
///
/// Outside China: the whole subject the Ruby agent pinned until 2018. In
/// China the signer is run by each region's operator (cn-north-1 Beijing,
/// cn-northwest-1 Ningxia), whose full subjects no source here records; the
/// country and the region's signer name are pinned, which is what tells
/// one region's signer from another's.
pub fn signer_mismatch(found: &str, region: &str) -> Option<String> {
    if let Some(expected) = signer_subject(region) {
        return (found != expected).then(|| format!("signed by {found:?}, expected {expected:?}"));
    }
    let cn = format!("/CN=codedeploy-signer-{region}.amazonaws.com.cn");
    let ok = found.starts_with("/C=CN/") && found.ends_with(&cn);
    (!ok).then(|| format!("signed by {found:?}, expected C=CN and {:?}", &cn[1..]))
}

/// The full signer subject of a region outside China.
pub fn signer_subject(region: &str) -> Option<String> {
    (!region.starts_with("cn-")).then(|| {
        format!("/C=US/ST=Washington/L=Seattle/O=Amazon.com, Inc./CN=codedeploy-signer-{region}.amazonaws.com")
    })
}

fn subject_line(cert: &openssl::x509::X509Ref) -> String {
    let mut s = String::new();
    for e in cert.subject_name().entries() {
        let key = e.object().nid().short_name().unwrap_or("?");
        let value = e.data().to_string().unwrap_or_default();
        s.push('/');
        s.push_str(key);
        s.push('=');
        s.push_str(&value);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_official_chain_is_shipped() {
        let certs = X509::stack_from_pem(AWS_SIGNER_CHAIN.as_bytes()).unwrap();
        assert_eq!(certs.len(), 4);
        Verifier::new(
            AWS_SIGNER_CHAIN.as_bytes(),
            "us-east-1",
            Mode::Strict,
            false,
        )
        .unwrap();
    }

    #[test]
    fn subjects_follow_the_region() {
        let us = "/C=US/ST=Washington/L=Seattle/O=Amazon.com, Inc./CN=codedeploy-signer-us-west-2.amazonaws.com";
        assert_eq!(signer_mismatch(us, "us-west-2"), None);
        assert!(signer_mismatch(us, "eu-west-1").is_some());
        let bjs = "/C=CN/ST=Beijing/L=Beijing/O=Operator/CN=codedeploy-signer-cn-north-1.amazonaws.com.cn";
        assert_eq!(signer_mismatch(bjs, "cn-north-1"), None);
        // Beijing's signer is not Ningxia's.
        assert!(signer_mismatch(bjs, "cn-northwest-1").is_some());
        let zhy = "/C=CN/ST=Ningxia/L=Zhongwei/O=Operator/CN=codedeploy-signer-cn-northwest-1.amazonaws.com.cn";
        assert_eq!(signer_mismatch(zhy, "cn-northwest-1"), None);
    }

    #[test]
    fn text_json_is_refused_unless_allowed() {
        let v = compatible();
        assert!(matches!(
            v.open("TEXT/JSON", "{}"),
            Err(EnvelopeError::Format(_))
        ));
        assert!(matches!(
            v.open("PKCS7/JSON", "garbage!"),
            Err(EnvelopeError::Decode(_))
        ));
    }

    fn compatible() -> Verifier {
        Verifier::new(
            AWS_SIGNER_CHAIN.as_bytes(),
            "us-east-1",
            Mode::Compatible,
            false,
        )
        .unwrap()
    }

    /// A specification signed by a throwaway key with `subject`, as PEM.
    fn signed(json: &str, subject: &str) -> String {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa};
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", subject).unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let none = Stack::new().unwrap();
        let p7 = Pkcs7::sign(&cert, &key, &none, json.as_bytes(), Pkcs7Flags::BINARY).unwrap();
        String::from_utf8(p7.to_pem().unwrap()).unwrap()
    }

    #[test]
    fn a_verified_envelope_is_recognised_and_a_tampered_one_still_refused() {
        let v = compatible();
        let json = r#"{"DeploymentId":"d-1"}"#;
        let pem = signed(json, "someone");
        let first = v.verify(&pem).unwrap();
        assert_eq!(first.0, json);
        assert!(
            first.1.is_some(),
            "strict mode refuses a stranger's signature"
        );
        assert_eq!(v.recent.lock().unwrap().len(), 1);
        assert_eq!(
            v.verify(&pem).unwrap(),
            first,
            "the same bytes, the same answer"
        );
        assert_eq!(v.recent.lock().unwrap().len(), 1, "kept once");
        // The signed content changed, the envelope otherwise the same.
        let der = Pkcs7::from_pem(pem.as_bytes()).unwrap().to_der().unwrap();
        let at = der
            .windows(json.len())
            .position(|w| w == json.as_bytes())
            .unwrap();
        let mut bad = der.clone();
        bad[at + 17] = b'2';
        let bad = base64::engine::general_purpose::STANDARD.encode(&bad);
        assert!(matches!(v.verify(&bad), Err(EnvelopeError::Signature(_))));
        for i in 0..RECENT + 2 {
            v.verify(&signed(json, &format!("s{i}"))).unwrap();
        }
        assert_eq!(v.recent.lock().unwrap().len(), RECENT, "bounded");
    }
}
