//! The testbed's deployment specification signer: a CA made at test time
//! and a signer certificate with the subject the agent pins, signing every
//! specification PKCS7 as the service does. Also the wrong signers the
//! tampering tests need.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Name, X509};

pub struct Authority {
    cert: X509,
    key: PKey<Private>,
    /// An intermediate under this CA that expired long ago, as every
    /// intermediate of the chain the official agents ship has.
    expired: Option<Box<Authority>>,
}

pub struct SigningKey {
    cert: X509,
    key: PKey<Private>,
}

fn rsa() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey")
}

fn name(entries: &[(&str, &str)]) -> X509Name {
    let mut b = X509Name::builder().expect("name");
    for (k, v) in entries {
        b.append_entry_by_text(k, v).expect("name entry");
    }
    b.build()
}

fn serial() -> openssl::asn1::Asn1Integer {
    let mut bn = BigNum::new().expect("bn");
    bn.rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .expect("rand");
    bn.to_asn1_integer().expect("serial")
}

/// A CA certificate for `common_name`, valid from `from` to `until`, signed
/// by `issuer` (its certificate and key), or by itself.
fn ca_cert(
    common_name: &str,
    issuer: Option<(&X509, &PKey<Private>)>,
    from: &Asn1Time,
    until: &Asn1Time,
) -> Authority {
    let key = rsa();
    let n = name(&[
        ("C", "US"),
        ("O", "CodeDeploy testbed"),
        ("CN", common_name),
    ]);
    let mut b = X509::builder().expect("x509");
    b.set_version(2).unwrap();
    b.set_serial_number(&serial()).unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(issuer.map_or(&*n, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(from).unwrap();
    b.set_not_after(until).unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(issuer.map_or(&key, |(_, k)| k), MessageDigest::sha256())
        .unwrap();
    Authority {
        cert: b.build(),
        key,
        expired: None,
    }
}

impl Authority {
    pub fn new(common_name: &str) -> Authority {
        let mut root = ca_cert(
            common_name,
            None,
            &Asn1Time::days_from_now(0).unwrap(),
            &Asn1Time::days_from_now(2).unwrap(),
        );
        // Valid in 2019-2020 only, as the shipped chain's intermediates.
        let expired = ca_cert(
            "expired intermediate",
            Some((&root.cert, &root.key)),
            &Asn1Time::from_unix(1_546_300_800).unwrap(),
            &Asn1Time::from_unix(1_604_188_800).unwrap(),
        );
        root.expired = Some(Box::new(expired));
        root
    }

    /// The trusted chain the agent is given: this CA and its expired
    /// intermediate, the shape of the official chain file.
    pub fn pem(&self) -> Vec<u8> {
        let mut pem = self.cert.to_pem().expect("pem");
        if let Some(i) = &self.expired {
            pem.extend(i.cert.to_pem().expect("pem"));
        }
        pem
    }

    /// The region's signer, issued by the expired intermediate: how a real
    /// specification most likely looks against the shipped chain.
    pub fn signer_under_expired_intermediate(&self, region: &str) -> SigningKey {
        self.expired
            .as_ref()
            .expect("a root authority has an expired intermediate")
            .signer_for_region(region)
    }

    /// A signing certificate with the subject the agent expects for `region`.
    pub fn signer_for_region(&self, region: &str) -> SigningKey {
        self.issue(&[
            ("C", "US"),
            ("ST", "Washington"),
            ("L", "Seattle"),
            ("O", "Amazon.com, Inc."),
            ("CN", &format!("codedeploy-signer-{region}.amazonaws.com")),
        ])
    }

    pub fn issue(&self, subject: &[(&str, &str)]) -> SigningKey {
        let key = rsa();
        let mut b = X509::builder().expect("x509");
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&name(subject)).unwrap();
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        SigningKey {
            cert: b.build(),
            key,
        }
    }
}

impl SigningKey {
    /// PKCS7 SignedData (PEM) carrying `content` and the signer certificate.
    pub fn sign(&self, content: &[u8]) -> String {
        let none: Stack<X509> = Stack::new().unwrap();
        let p7 = Pkcs7::sign(&self.cert, &self.key, &none, content, Pkcs7Flags::BINARY)
            .expect("pkcs7 sign");
        String::from_utf8(p7.to_pem().expect("pem")).expect("ascii")
    }
}

/// Change one byte of the signed content inside a PEM PKCS7 (same length,
/// so the structure still parses and only the digest is wrong).
pub fn tamper_content(pem: &str, find: &str, replace: &str) -> String {
    assert_eq!(find.len(), replace.len(), "same length keeps the DER valid");
    let p7 = Pkcs7::from_pem(pem.as_bytes()).expect("pkcs7");
    let mut der = p7.to_der().expect("der");
    let pos = der
        .windows(find.len())
        .position(|w| w == find.as_bytes())
        .expect("content to tamper with");
    der[pos..pos + find.len()].copy_from_slice(replace.as_bytes());
    let p7 = Pkcs7::from_der(&der).expect("tampered DER still parses");
    String::from_utf8(p7.to_pem().unwrap()).unwrap()
}
