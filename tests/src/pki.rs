//! Certificates for the test world, made when a test runs.
//!
//! The SMTP servers of [`crate::smtp_world`] present these, and tests publish
//! TLSA records computed from them ([`tlsa_record`]) to prove DANE
//! (RFC 6698 §2.1, RFC 7671, RFC 7672). Nothing is checked in: every key is
//! fresh, so no test can pass because of a stale fixture.
//!
//! * [`self_signed`]: a leaf for a name, signed by itself — what most MX
//!   hosts without Web PKI certificates present, and what DANE-EE(3)
//!   authenticates.
//! * [`expired_misnamed`]: expired and for the wrong name; DANE-EE must still
//!   accept it (RFC 7672 §3.1.1), Web PKI never.
//! * [`TestCa`]: a CA that issues leaves with the CA in the chain, for
//!   DANE-TA(2), which needs the name check (RFC 7672 §3.1.2).
//! * [`rsa_self_signed`]: an RSA leaf, for the TLS 1.0 server whose only
//!   cipher uses RSA key transport (rcgen cannot make RSA keys; OpenSSL can).
//!
//! Generating a certificate from valid parameters cannot fail, so these
//! helpers panic (with the reason) rather than make every test handle an
//! error that never happens.

use mailtls_core::TlsaRecord;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::X509;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};

/// A certificate chain and its private key, as a TLS server needs them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// DER certificates, the server's own (leaf) first, then its issuers.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's private key, PKCS#8 DER.
    pub key: Vec<u8>,
}

impl Credential {
    /// The leaf certificate, DER.
    pub fn leaf(&self) -> &[u8] {
        // Invariant: every constructor in this module puts the leaf first.
        &self.chain[0]
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field(
                "chain",
                &format_args!("{} certificate(s)", self.chain.len()),
            )
            .field("leaf_sha256", &hex(&cert_sha256(self.leaf())))
            .finish_non_exhaustive()
    }
}

/// A self-signed leaf certificate for `name` (subjectAltName and CN), valid
/// from 1975 to 4096, ECDSA P-256.
pub fn self_signed(name: &str) -> Credential {
    let key = KeyPair::generate().expect("ECDSA P-256 key generation");
    let cert = leaf_params(name)
        .self_signed(&key)
        .expect("self-signing valid parameters");
    Credential {
        chain: vec![cert.der().to_vec()],
        key: key.serialize_der(),
    }
}

/// A self-signed leaf that expired on 2020-01-01 and names
/// `wrong-name.invalid`: unacceptable to Web PKI, acceptable to DANE-EE.
pub fn expired_misnamed() -> Credential {
    let key = KeyPair::generate().expect("ECDSA P-256 key generation");
    let mut params = leaf_params("wrong-name.invalid");
    params.not_before = date_time_ymd(2019, 1, 1);
    params.not_after = date_time_ymd(2020, 1, 1);
    let cert = params
        .self_signed(&key)
        .expect("self-signing valid parameters");
    Credential {
        chain: vec![cert.der().to_vec()],
        key: key.serialize_der(),
    }
}

/// A self-signed RSA-2048 leaf for `name`, for servers that only speak
/// TLS 1.0 with RSA key transport (`AES128-SHA`).
pub fn rsa_self_signed(name: &str) -> Credential {
    let rsa = Rsa::generate(2048).expect("RSA key generation");
    let pkey = PKey::from_rsa(rsa).expect("wrapping an RSA key");
    let pkcs8 = pkey
        .private_key_to_pkcs8()
        .expect("PKCS#8 encoding of an RSA key");
    // rcgen signs with any key it can parse; it only cannot generate RSA.
    let key = KeyPair::try_from(pkcs8.as_slice()).expect("rcgen reads an OpenSSL RSA key");
    let cert = leaf_params(name)
        .self_signed(&key)
        .expect("self-signing valid parameters");
    Credential {
        chain: vec![cert.der().to_vec()],
        key: pkcs8,
    }
}

/// A certificate authority for DANE-TA(2) tests.
pub struct TestCa {
    cert: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new self-signed CA named `name` (used as its CN).
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("ECDSA P-256 key generation");
        let mut params =
            CertificateParams::new(Vec::<String>::new()).expect("empty name list is valid");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .expect("self-signing valid parameters");
        TestCa {
            cert: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, DER.
    pub fn cert(&self) -> &[u8] {
        &self.cert
    }

    /// A leaf for `name` issued by this CA; the chain is leaf then CA, as
    /// RFC 7671 §5.2.2 asks servers with DANE-TA records to send it.
    pub fn issue(&self, name: &str) -> Credential {
        let key = KeyPair::generate().expect("ECDSA P-256 key generation");
        let cert = leaf_params(name)
            .signed_by(&key, &self.issuer)
            .expect("signing valid parameters");
        Credential {
            chain: vec![cert.der().to_vec(), self.cert.clone()],
            key: key.serialize_der(),
        }
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("sha256", &hex(&cert_sha256(&self.cert)))
            .finish_non_exhaustive()
    }
}

fn leaf_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(vec![name.to_owned()])
        .expect("a DNS name is a valid subjectAltName");
    params.distinguished_name.push(DnType::CommonName, name);
    params
}

/// SHA-256 of a DER certificate (TLSA selector 0, matching type 1).
pub fn cert_sha256(cert_der: &[u8]) -> Vec<u8> {
    openssl::sha::sha256(cert_der).to_vec()
}

/// The DER SubjectPublicKeyInfo of a certificate (TLSA selector 1).
pub fn spki_der(cert_der: &[u8]) -> Vec<u8> {
    let cert = X509::from_der(cert_der).expect("a certificate made by this module");
    let key = cert.public_key().expect("a certificate has a public key");
    key.public_key_to_der()
        .expect("DER encoding of a public key")
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo (TLSA selector 1,
/// matching type 1: the usual `3 1 1` record).
pub fn spki_sha256(cert_der: &[u8]) -> Vec<u8> {
    openssl::sha::sha256(&spki_der(cert_der)).to_vec()
}

/// The TLSA record with these parameters for a certificate (RFC 6698 §2.1):
/// selector 0 full certificate, 1 SubjectPublicKeyInfo; matching type 0
/// exact, 1 SHA2-256, 2 SHA2-512. The usage is copied as given.
///
/// # Panics
///
/// For a selector or matching type outside those.
pub fn tlsa_record(usage: u8, selector: u8, matching: u8, cert_der: &[u8]) -> TlsaRecord {
    let selected = match selector {
        0 => cert_der.to_vec(),
        1 => spki_der(cert_der),
        other => panic!("TLSA selector {other} is not defined"),
    };
    let data = match matching {
        0 => selected,
        1 => openssl::sha::sha256(&selected).to_vec(),
        2 => openssl::hash::hash(MessageDigest::sha512(), &selected)
            .expect("SHA-512")
            .to_vec(),
        other => panic!("TLSA matching type {other} is not defined"),
    };
    TlsaRecord {
        usage,
        selector,
        matching,
        data,
    }
}

/// `3 1 1` for the credential's leaf: DANE-EE, SPKI, SHA2-256.
pub fn dane_ee(credential: &Credential) -> TlsaRecord {
    tlsa_record(3, 1, 1, credential.leaf())
}

/// `2 0 1` for the CA: DANE-TA, full certificate, SHA2-256.
pub fn dane_ta(ca: &TestCa) -> TlsaRecord {
    tlsa_record(2, 0, 1, ca.cert())
}

/// Lower-case hex, as in zone files.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(der: &[u8]) -> X509 {
        X509::from_der(der).expect("valid DER")
    }

    fn names(cert: &X509) -> Vec<String> {
        cert.subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.dnsname().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn self_signed_leaf_names_its_host_and_matches_its_key() {
        let cred = self_signed("mx.example");
        let cert = parse(cred.leaf());
        assert_eq!(names(&cert), ["mx.example"]);
        let key = PKey::private_key_from_pkcs8(&cred.key).expect("PKCS#8");
        assert!(cert.public_key().expect("key").public_eq(&key));
        assert!(cert.verify(&key).expect("verify"), "self-signed");
    }

    #[test]
    fn expired_misnamed_is_expired_and_misnamed() {
        let cert = parse(expired_misnamed().leaf());
        assert_eq!(names(&cert), ["wrong-name.invalid"]);
        let now = openssl::asn1::Asn1Time::days_from_now(0).expect("now");
        assert!(cert.not_after() < now);
    }

    #[test]
    fn ca_issues_a_chain_with_itself_second() {
        let ca = TestCa::new("Test CA");
        let cred = ca.issue("mx.example");
        assert_eq!(cred.chain.len(), 2);
        assert_eq!(cred.chain[1], ca.cert());
        let ca_cert = parse(ca.cert());
        let leaf = parse(cred.leaf());
        assert!(
            leaf.verify(&ca_cert.public_key().expect("key"))
                .expect("verify")
        );
        assert_eq!(names(&leaf), ["mx.example"]);
    }

    #[test]
    fn rsa_leaf_has_an_rsa_key() {
        let cred = rsa_self_signed("legacy.example");
        let cert = parse(cred.leaf());
        assert!(cert.public_key().expect("key").rsa().is_ok());
        assert!(
            PKey::private_key_from_pkcs8(&cred.key)
                .expect("PKCS#8")
                .rsa()
                .is_ok()
        );
    }

    #[test]
    fn tlsa_data_is_computed_as_rfc_6698_says() {
        let cred = self_signed("mx.example");
        let leaf = cred.leaf();
        assert_eq!(dane_ee(&cred).data, spki_sha256(leaf));
        assert_eq!(tlsa_record(3, 0, 0, leaf).data, leaf);
        assert_eq!(tlsa_record(3, 0, 1, leaf).data, cert_sha256(leaf));
        assert_eq!(tlsa_record(3, 1, 2, leaf).data.len(), 64);
        assert_eq!(
            spki_der(leaf),
            parse(leaf)
                .public_key()
                .expect("key")
                .public_key_to_der()
                .expect("der")
        );
        assert!(dane_ee(&cred).is_usable());
        assert!(dane_ta(&TestCa::new("CA")).is_usable());
    }
}
