//! The deployment specification envelope: verify the PKCS7 signature and
//! the signer, then hand the signed JSON to `DeploymentSpec::from_json`.
//!
//! Rules (Ruby `deployment_specification.rb`): the signature verifies
//! against the trusted chain only (certificates carried in the message are
//! not used as intermediates: NOCHAIN), the message carries exactly one
//! certificate, and that certificate's subject is the CodeDeploy signer of
//! the host's region. The official Rust 2.x agent verifies with NOVERIFY
//! (no chain check at all); we keep the Ruby agent's rule, which is the
//! one that makes the signature mean something.

use base64::Engine as _;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::X509;

use crate::spec::{DeploymentSpec, SpecError};

/// The chain the official agents ship, embedded so a packaging mistake
/// cannot leave the agent without a trust anchor.
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
    #[error("the deployment specification is signed by {found:?}, expected {expected:?}")]
    Signer { found: String, expected: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot load the trusted certificate chain {0}")]
    Trust(String),
}

/// Verifies envelopes for one region.
pub struct Verifier {
    store: X509Store,
    expected_subject: String,
    /// Tests only (`:allow_unsigned_specs:`): accept `TEXT/JSON`.
    allow_text: bool,
}

impl Verifier {
    /// `chain_pem`: the trusted certificates (PEM, one or more).
    pub fn new(
        chain_pem: &[u8],
        region: &str,
        allow_text: bool,
    ) -> Result<Verifier, EnvelopeError> {
        let certs =
            X509::stack_from_pem(chain_pem).map_err(|e| EnvelopeError::Trust(e.to_string()))?;
        if certs.is_empty() {
            return Err(EnvelopeError::Trust("it holds no certificate".into()));
        }
        let mut b = X509StoreBuilder::new().map_err(|e| EnvelopeError::Trust(e.to_string()))?;
        for c in certs {
            b.add_cert(c)
                .map_err(|e| EnvelopeError::Trust(e.to_string()))?;
        }
        Ok(Verifier {
            store: b.build(),
            expected_subject: signer_subject(region),
            allow_text,
        })
    }

    /// Verify `payload` of format `format` and parse the specification.
    pub fn open(&self, format: &str, payload: &str) -> Result<DeploymentSpec, EnvelopeError> {
        let json = match format {
            "PKCS7/JSON" => self.verify(payload)?,
            "TEXT/JSON" if self.allow_text => payload.to_string(),
            other => return Err(EnvelopeError::Format(other.to_string())),
        };
        Ok(DeploymentSpec::from_json(&json)?)
    }

    fn verify(&self, payload: &str) -> Result<String, EnvelopeError> {
        let p7 = decode(payload)?;
        let signed = p7
            .signed()
            .ok_or_else(|| EnvelopeError::Decode("not SignedData".into()))?;
        let carried = signed.certificates().map(|s| s.len()).unwrap_or(0);
        if carried != 1 {
            return Err(EnvelopeError::Signature(format!(
                "the message must carry exactly one signer certificate, it carries {carried}"
            )));
        }
        let empty: Stack<X509> =
            Stack::new().map_err(|e| EnvelopeError::Signature(e.to_string()))?;
        let mut out = Vec::new();
        p7.verify(
            &empty,
            &self.store,
            None,
            Some(&mut out),
            Pkcs7Flags::NOCHAIN,
        )
        .map_err(|e| EnvelopeError::Signature(e.to_string()))?;
        let cert = signed
            .certificates()
            .and_then(|s| s.iter().next())
            .ok_or_else(|| EnvelopeError::Signature("no signer certificate".into()))?;
        let found = subject_line(cert);
        if found != self.expected_subject {
            return Err(EnvelopeError::Signer {
                found,
                expected: self.expected_subject.clone(),
            });
        }
        String::from_utf8(out)
            .map_err(|_| EnvelopeError::Decode("the signed content is not UTF-8".into()))
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

/// The signer subject the official agent pins, in OpenSSL's one-line form.
pub fn signer_subject(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("/C=CN/ST=Beijing/L=Beijing/O=Amazon Connect Technology Services (Beijing) Co., Ltd./CN=codedeploy-signer-{region}.amazonaws.com.cn")
    } else {
        format!("/C=US/ST=Washington/L=Seattle/O=Amazon.com, Inc./CN=codedeploy-signer-{region}.amazonaws.com")
    }
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
    fn bundled_chain_loads() {
        Verifier::new(AWS_SIGNER_CHAIN.as_bytes(), "us-east-1", false).unwrap();
    }

    #[test]
    fn subjects_follow_the_partition() {
        assert!(
            signer_subject("us-west-2").ends_with("CN=codedeploy-signer-us-west-2.amazonaws.com")
        );
        assert!(signer_subject("cn-north-1").ends_with(".amazonaws.com.cn"));
    }

    #[test]
    fn text_json_is_refused_unless_allowed() {
        let v = Verifier::new(AWS_SIGNER_CHAIN.as_bytes(), "us-east-1", false).unwrap();
        assert!(matches!(
            v.open("TEXT/JSON", "{}"),
            Err(EnvelopeError::Format(_))
        ));
        assert!(matches!(
            v.open("PKCS7/JSON", "garbage!"),
            Err(EnvelopeError::Decode(_))
        ));
    }
}
