//! The informational Web PKI check: would the chain the server sent verify
//! for its MX host name against the system's trust store?
//!
//! SMTP delivery does not rely on it (RFC 7672 §1.3: MX host names are not
//! authenticated without DNSSEC, so PKIX alone proves little for SMTP), but
//! the check shows it, and it is what MTA-STS (RFC 8461) would require.
//! It is kept apart from the handshake's own verification, whose context
//! deliberately has no trust anchors (only DANE may authenticate there).

use std::cmp::Ordering;
use std::net::IpAddr;
use std::sync::OnceLock;

use openssl::error::ErrorStack;
use openssl::ssl::SslRef;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509, X509Name, X509NameRef, X509PurposeId, X509Ref, X509StoreContext};

use crate::ffi;

/// Where the system's CA bundle is looked for, after `SSL_CERT_FILE`:
/// Debian's bundle, and OpenSSL's default file on Debian.
const CA_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/usr/lib/ssl/cert.pem",
];

/// The trust anchors of the Web PKI check: an OpenSSL store, and the
/// bundle's certificates that are not in it yet.
///
/// OpenSSL 3.0 spends ~1.6 M instructions setting up a key decoder for every
/// certificate it parses, so parsing a whole system bundle (~150
/// certificates) cost ~30 ms of CPU at start-up, most of a single `mailtls
/// check`. Only the subject names are parsed up front; a certificate is
/// parsed and added to the store the first time a chain names its subject as
/// an issuer, directly or through another bundle certificate, before that
/// chain is verified. Chain building only ever asks the store for
/// certificates by subject, so verification sees the same certificates as
/// with the whole bundle loaded.
pub(crate) struct WebPki {
    store: X509Store,
    lazy: Vec<LazyRoot>,
}

/// One bundle certificate, parsed on first use.
struct LazyRoot {
    subject: X509Name,
    der: Vec<u8>,
    /// The parsed certificate once it is in the store; `None` if it does not
    /// parse. Initialised once, other threads waiting meanwhile.
    added: OnceLock<Option<X509>>,
}

/// The system trust store, loaded into memory once per process.
///
/// The CA bundle file is read whole (honouring `SSL_CERT_FILE`), rather
/// than `X509_STORE_set_default_paths`: with OpenSSL 3.0 the latter adds a
/// directory look-up that reads `/etc/ssl/certs` for every issuer not in
/// memory, i.e. for every self-signed or private-CA certificate, common on
/// port 25 (measured: ~0.3 ms of CPU per check, docs/benchmarks.md). Without
/// a readable bundle, OpenSSL's default paths are used.
pub(crate) fn system_store() -> Result<WebPki, ErrorStack> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let bundle = from_env
        .into_iter()
        .chain(CA_BUNDLES.iter().map(std::path::PathBuf::from))
        .find_map(|path| std::fs::read(path).ok());
    if let Some(store) = bundle.and_then(|pem| store_from_pem(&pem).ok()) {
        return Ok(store);
    }
    let mut builder = X509StoreBuilder::new()?;
    builder.set_default_paths()?;
    Ok(WebPki {
        store: builder.build(),
        lazy: Vec::new(),
    })
}

/// Anchors trusting exactly the PEM certificates in `pem`: parsed on first
/// use when every block is a plain `CERTIFICATE` whose subject name can be
/// read, otherwise all parsed now (an error if one does not parse).
pub(crate) fn store_from_pem(pem: &[u8]) -> Result<WebPki, ErrorStack> {
    if let Some(lazy) = lazy_roots(pem) {
        return Ok(WebPki {
            store: X509StoreBuilder::new()?.build(),
            lazy,
        });
    }
    let mut builder = X509StoreBuilder::new()?;
    for cert in X509::stack_from_pem(pem)? {
        builder.add_cert(cert)?;
    }
    Ok(WebPki {
        store: builder.build(),
        lazy: Vec::new(),
    })
}

impl WebPki {
    /// Adds to the store every bundle certificate whose subject is the
    /// issuer of a certificate in `chain`, and so on up from the ones added.
    fn load_issuers_of(&self, chain: &[&X509Ref]) {
        if self.lazy.is_empty() {
            return;
        }
        let mut seen = vec![false; self.lazy.len()];
        let mut wanted: Vec<X509Name> = Vec::new();
        for cert in chain {
            self.load_subject(cert.issuer_name(), &mut seen, &mut wanted);
        }
        while let Some(name) = wanted.pop() {
            self.load_subject(&name, &mut seen, &mut wanted);
        }
    }

    /// Loads the bundle certificates with subject `name` (once per process)
    /// and queues their issuers.
    fn load_subject(&self, name: &X509NameRef, seen: &mut [bool], wanted: &mut Vec<X509Name>) {
        for (root, seen) in self.lazy.iter().zip(seen.iter_mut()) {
            if *seen || !matches!(root.subject.try_cmp(name), Ok(Ordering::Equal)) {
                continue;
            }
            *seen = true;
            let added = root.added.get_or_init(|| {
                let cert = X509::from_der(&root.der).ok()?;
                ffi::store_add_cert(&self.store, &cert).ok()?;
                Some(cert)
            });
            if let Some(cert) = added
                && let Ok(issuer) = cert.issuer_name().to_owned()
            {
                wanted.push(issuer);
            }
        }
    }
}

/// The certificates of a PEM bundle as DER with their subject names, or
/// `None` if the bundle holds anything else than plain `CERTIFICATE` blocks
/// (or none), or a block whose subject cannot be read.
fn lazy_roots(pem: &[u8]) -> Option<Vec<LazyRoot>> {
    let text = std::str::from_utf8(pem).ok()?;
    let mut roots = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_end();
        if !line.starts_with("-----BEGIN") {
            continue;
        }
        if line != "-----BEGIN CERTIFICATE-----" {
            return None;
        }
        let mut base64 = String::new();
        loop {
            let line = lines.next()?.trim();
            if line == "-----END CERTIFICATE-----" {
                break;
            }
            if line.starts_with("-----") || line.contains(':') {
                return None;
            }
            base64.push_str(line);
        }
        let der = openssl::base64::decode_block(&base64).ok()?;
        let subject = X509Name::from_der(subject_der(&der)?).ok()?;
        roots.push(LazyRoot {
            subject,
            der,
            added: OnceLock::new(),
        });
    }
    (!roots.is_empty()).then_some(roots)
}

/// The DER of the subject name of a DER certificate (RFC 5280 §4.1):
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
/// OPTIONAL, serialNumber, signature, issuer, validity, subject, … }, … }`.
fn subject_der(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, rest) = der_element(cert, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (tbs, _) = der_element(der_contents(certificate)?, 0x30)?;
    let mut fields = der_contents(tbs)?;
    if fields.first() == Some(&0xa0) {
        fields = der_element(fields, 0xa0)?.1;
    }
    for tag in [0x02, 0x30, 0x30, 0x30] {
        fields = der_element(fields, tag)?.1; // serial, signature, issuer, validity
    }
    Some(der_element(fields, 0x30)?.0)
}

/// Splits the first DER element (definite length, tag `tag`) off `input`:
/// the whole element and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)?;
    let (header, length) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 3 {
            return None; // indefinite, or longer than any certificate
        }
        let bytes = input.get(2..2 + count)?;
        let length = bytes.iter().fold(0usize, |n, b| n << 8 | usize::from(*b));
        (2 + count, length)
    };
    let end = header.checked_add(length)?;
    Some((input.get(..end)?, input.get(end..)?))
}

/// The contents of one DER element (without its tag and length).
fn der_contents(element: &[u8]) -> Option<&[u8]> {
    let first = *element.get(1)?;
    let header = if first < 0x80 {
        2
    } else {
        2 + usize::from(first & 0x7f)
    };
    element.get(header..)
}

/// Whether the peer's chain verifies for `server_name` (a host name, or an
/// IP address literal) as a TLS server certificate, now. False when there is
/// no certificate, no name, or on any OpenSSL failure.
pub(crate) fn chain_is_valid(anchors: &WebPki, ssl: &SslRef, server_name: &str) -> bool {
    if server_name.is_empty() {
        // An empty host would switch the name check off.
        return false;
    }
    let Some(leaf) = ssl.peer_certificate() else {
        return false;
    };
    let Ok(empty) = Stack::new() else {
        return false;
    };
    let untrusted = ssl.peer_cert_chain().unwrap_or(&empty);
    let mut chain: Vec<&X509Ref> = untrusted.iter().collect();
    chain.push(&leaf);
    anchors.load_issuers_of(&chain);
    let store = &anchors.store;
    let Ok(mut context) = X509StoreContext::new() else {
        return false;
    };
    let verified = context.init(store, &leaf, untrusted, |ctx| {
        let Some(param) = ffi::store_ctx_param_mut(ctx) else {
            return Ok(false);
        };
        param.set_purpose(X509PurposeId::SSL_SERVER)?;
        match server_name.parse::<IpAddr>() {
            Ok(ip) => param.set_ip(ip)?,
            Err(_) => {
                param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
                param.set_host(server_name)?;
            }
        }
        ctx.verify_cert()
    });
    verified.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::X509Builder;
    use openssl::x509::extension::BasicConstraints;

    use super::*;

    fn key() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
        PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey")
    }

    /// A certificate for `cn`, signed by `issuer` (or self-signed).
    fn cert(
        cn: &str,
        serial: u32,
        ca: bool,
        issuer: Option<(&X509, &PKey<Private>)>,
    ) -> (X509, PKey<Private>) {
        let key = key();
        let mut name = X509Name::builder().expect("name");
        name.append_entry_by_text("CN", cn).expect("cn");
        let name = name.build();
        let mut b = X509Builder::new().expect("builder");
        b.set_version(2).expect("version");
        b.set_serial_number(
            &BigNum::from_u32(serial)
                .expect("bn")
                .to_asn1_integer()
                .expect("serial"),
        )
        .expect("serial");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(issuer.map_or(&*name, |(c, _)| c.subject_name()))
            .expect("issuer");
        b.set_not_before(&Asn1Time::days_from_now(0).expect("now"))
            .expect("nb");
        b.set_not_after(&Asn1Time::days_from_now(30).expect("later"))
            .expect("na");
        b.set_pubkey(&key).expect("pubkey");
        if ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
                .expect("ext");
        }
        b.sign(issuer.map_or(&key, |(_, k)| k), MessageDigest::sha256())
            .expect("sign");
        (b.build(), key)
    }

    fn pem(certs: &[&X509]) -> Vec<u8> {
        certs
            .iter()
            .flat_map(|c| c.to_pem().expect("pem"))
            .collect()
    }

    fn verifies(anchors: &WebPki, leaf: &X509, untrusted: &[&X509]) -> bool {
        let mut stack = Stack::new().expect("stack");
        for c in untrusted {
            stack.push((*c).clone()).expect("push");
        }
        let mut chain: Vec<&X509Ref> = untrusted.iter().map(|c| &***c).collect();
        chain.push(leaf);
        anchors.load_issuers_of(&chain);
        let mut context = X509StoreContext::new().expect("context");
        context
            .init(&anchors.store, leaf, &stack, |ctx| ctx.verify_cert())
            .expect("verify")
    }

    #[test]
    fn subject_is_found_in_the_der() {
        let (root, _) = cert("Root", 1, true, None);
        let der = root.to_der().expect("der");
        assert_eq!(
            subject_der(&der),
            Some(&*root.subject_name().to_der().expect("name der"))
        );
        assert_eq!(subject_der(&der[..der.len() - 1]), None);
        assert_eq!(subject_der(&[der.as_slice(), &[0]].concat()), None);
    }

    #[test]
    fn only_plain_certificate_blocks_are_loaded_lazily() {
        let (root, _) = cert("Root", 1, true, None);
        let text = String::from_utf8(pem(&[&root])).expect("utf8");
        assert_eq!(lazy_roots(text.as_bytes()).map(|r| r.len()), Some(1));
        let commented = format!("# Root\n{text}\n# end\n");
        assert_eq!(lazy_roots(commented.as_bytes()).map(|r| r.len()), Some(1));
        let trusted = text.replace("CERTIFICATE", "TRUSTED CERTIFICATE");
        assert!(lazy_roots(trusted.as_bytes()).is_none());
        let truncated = &text[..text.len() / 2];
        assert!(lazy_roots(truncated.as_bytes()).is_none());
        assert!(lazy_roots(b"").is_none());
        // What is not lazy is parsed at once, as before: an error for a
        // broken bundle.
        assert!(store_from_pem(truncated.as_bytes()).is_err());
    }

    // Issuers are loaded transitively, from the chain the peer sent and from
    // the bundle itself, and nothing else is trusted.
    #[test]
    fn issuers_are_loaded_on_demand_up_the_chain() {
        let (other, _) = cert("Other Root", 9, true, None);
        let (root, root_key) = cert("Root", 1, true, None);
        let (inter, inter_key) = cert("Intermediate", 2, true, Some((&root, &root_key)));
        let (leaf, _) = cert("mx.example", 3, false, Some((&inter, &inter_key)));

        let sent_intermediate = store_from_pem(&pem(&[&other, &root])).expect("store");
        assert_eq!(sent_intermediate.lazy.len(), 2);
        assert!(verifies(&sent_intermediate, &leaf, &[&inter]));
        assert!(
            sent_intermediate.lazy[0].added.get().is_none(),
            "unrelated root parsed"
        );

        let bundled_intermediate = store_from_pem(&pem(&[&root, &inter])).expect("store");
        assert!(verifies(&bundled_intermediate, &leaf, &[]));
        assert!(verifies(&bundled_intermediate, &leaf, &[]), "again, loaded");

        let untrusted = store_from_pem(&pem(&[&other])).expect("store");
        assert!(!verifies(&untrusted, &leaf, &[&inter]));
        assert!(!verifies(&untrusted, &inter, &[]));
    }

    // The system bundle is read lazily, with the same certificates as a
    // whole parse.
    #[test]
    fn system_bundle_loads_lazily_with_the_same_subjects() {
        let Some(bundle) = CA_BUNDLES.iter().find_map(|p| std::fs::read(p).ok()) else {
            return;
        };
        let lazy = lazy_roots(&bundle).expect("the system bundle is plain PEM certificates");
        let eager = X509::stack_from_pem(&bundle).expect("parses");
        assert_eq!(lazy.len(), eager.len());
        for (l, e) in lazy.iter().zip(&eager) {
            assert_eq!(l.der, e.to_der().expect("der"));
            assert_eq!(
                l.subject.try_cmp(e.subject_name()).ok(),
                Some(Ordering::Equal)
            );
        }
    }
}
