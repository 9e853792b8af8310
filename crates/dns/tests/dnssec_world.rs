//! mailtls-dns against a real signed DNS: a private root, signed, unsigned
//! and bogus zones served by hickory-server (`mailtls_e2e::dns_world`), asked
//! in both modes: validating in-process from the private root's anchor, and
//! trusting the AD bit of Debian's unbound validating the same tree.
//!
//! Each test states the rule it pins (RFC 4035 for DNSSEC states, RFC 5321
//! §5.1 and RFC 7505 for MX, RFC 7672 §2.2 for when TLSA applies).

use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mailtls_core::dane::NotApplicable;
use mailtls_dns::{
    Answer, DnsConfig, DnsMode, DnsSetupError, DnssecStatus, Lookup, MailResolver, MxRecord,
    TlsaRecord, TlsaState,
};
use mailtls_e2e::dns_world::{
    DnsWorld, RecordType, RunningWorld, Signing, Unbound, foreign_trust_anchor_text,
};

type TestResult = Result<(), Box<dyn Error>>;

const DIGEST: [u8; 32] = [0xab; 32];

/// The scenarios, all in one world:
///
/// * `dane-ok.example.` signed: MX → mx1 (A, TLSA 3 1 1), mx-alias (CNAME to
///   `mx.target.example.`, signed, with TLSA there), mx-bad (TLSA with
///   tampered signatures), mx-notlsa (A only).
/// * `insecure.example.` unsigned: MX → mx.insecure.example.
/// * `bogus.example.`: signed with a key the parent's DS does not match.
/// * `nullmx.example.` signed: `MX 0 .` (RFC 7505).
/// * `nomx.example.` signed: an A record and no MX (RFC 5321 §5.1).
/// * `mixed.example.` signed: MX → mx.insecure.example. (secure MX,
///   insecure host addresses).
fn world() -> Result<DnsWorld, Box<dyn Error>> {
    let mut world = DnsWorld::new();
    world
        .zone("dane-ok.example.", Signing::Signed)
        .mx(10, "mx1.dane-ok.example.")
        .mx(20, "mx-alias.dane-ok.example.")
        .a("mx1.dane-ok.example.", "127.1.2.3".parse()?)
        .tlsa("_25._tcp.mx1.dane-ok.example.", 3, 1, 1, &DIGEST)
        .cname("mx-alias.dane-ok.example.", "mx.target.example.")
        .a("mx-bad.dane-ok.example.", "127.1.2.4".parse()?)
        .tlsa("_25._tcp.mx-bad.dane-ok.example.", 3, 1, 1, &DIGEST)
        .tamper("_25._tcp.mx-bad.dane-ok.example.", RecordType::TLSA)
        .a("mx-notlsa.dane-ok.example.", "127.1.2.5".parse()?);
    world
        .zone("dane-ok.example.", Signing::Signed)
        .cname("mx-to-insecure.dane-ok.example.", "mx.insecure.example.")
        .a("mx6.dane-ok.example.", "127.1.2.7".parse()?)
        .aaaa("mx6.dane-ok.example.", "fd00::7".parse()?);
    // 120 addresses: an answer too big for 1232 bytes of UDP (RFC 7766 §5).
    let big = world.zone("dane-ok.example.", Signing::Signed);
    for i in 0..120u8 {
        big.a(
            "big.dane-ok.example.",
            std::net::Ipv4Addr::new(127, 9, 0, i),
        );
    }
    world
        .zone("target.example.", Signing::Signed)
        .a("mx.target.example.", "127.1.2.6".parse()?)
        .tlsa("_25._tcp.mx.target.example.", 2, 0, 1, &DIGEST);
    world
        .zone("insecure.example.", Signing::Unsigned)
        .mx(10, "mx.insecure.example.")
        .a("mx.insecure.example.", "127.1.3.1".parse()?)
        .tlsa("_25._tcp.mx.insecure.example.", 3, 1, 1, &DIGEST);
    world
        .zone("bogus.example.", Signing::Bogus)
        .mx(10, "mx.bogus.example.")
        .a("mx.bogus.example.", "127.1.4.1".parse()?);
    world.zone("nullmx.example.", Signing::Signed).null_mx();
    world
        .zone("nomx.example.", Signing::Signed)
        .a("nomx.example.", "127.1.5.1".parse()?);
    world
        .zone("mixed.example.", Signing::Signed)
        .mx(10, "mx.insecure.example.");
    Ok(world)
}

fn config(resolver: SocketAddr, mode: DnsMode, trust_anchor: Option<PathBuf>) -> DnsConfig {
    DnsConfig {
        resolver: Some(resolver),
        mode,
        trust_anchor,
        timeout: Duration::from_secs(3),
    }
}

/// The world, its unbound, and one resolver per mode.
struct Fixture {
    _world: RunningWorld,
    unbound: Unbound,
    validate: MailResolver,
    trust_ad: MailResolver,
}

impl Fixture {
    async fn start() -> Result<Fixture, Box<dyn Error>> {
        let world = world()?.start().await?;
        let unbound = world.start_unbound().await?;
        let validate = MailResolver::new(&config(
            world.addr(),
            DnsMode::Validate,
            Some(world.trust_anchor_path()),
        ))?;
        let trust_ad = MailResolver::new(&config(unbound.addr(), DnsMode::TrustAd, None))?;
        Ok(Fixture {
            _world: world,
            unbound,
            validate,
            trust_ad,
        })
    }

    fn both(&self) -> [(&'static str, &MailResolver); 2] {
        [("validate", &self.validate), ("trust-ad", &self.trust_ad)]
    }

    /// Context for a failed assertion: which mode, and what unbound said.
    fn context(&self, mode: &str) -> String {
        if mode == "trust-ad" {
            format!("mode {mode}; unbound log:\n{}", self.unbound.log())
        } else {
            format!("mode {mode}")
        }
    }
}

fn secure<T>(records: Vec<T>) -> Lookup<T> {
    Lookup::Found(Answer {
        records,
        dnssec: DnssecStatus::Secure,
        canonical_name: None,
    })
}

fn mx(preference: u16, exchange: &str) -> MxRecord {
    MxRecord {
        preference,
        exchange: exchange.to_owned(),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

// RFC 4035 §4.3 "secure": a chain of signed DNSKEY and DS from the anchor;
// RFC 5321 §5.1: MX records sorted by preference.
#[tokio::test]
async fn signed_mx_is_secure_and_sorted() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let got = resolver.mx("dane-ok.example").await;
        assert_eq!(
            got,
            secure(vec![
                mx(10, "mx1.dane-ok.example"),
                mx(20, "mx-alias.dane-ok.example")
            ]),
            "{}",
            f.context(mode)
        );
        let got = resolver.addresses("mx1.dane-ok.example").await;
        assert_eq!(got, secure(vec![ip("127.1.2.3")]), "{}", f.context(mode));
    }
    Ok(())
}

// RFC 4035 §4.3 "insecure": the parent proves (NSEC) there is no DS.
#[tokio::test]
async fn unsigned_child_is_insecure() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let got = resolver.mx("insecure.example").await;
        let expected = Lookup::Found(Answer {
            records: vec![mx(10, "mx.insecure.example")],
            dnssec: DnssecStatus::Insecure,
            canonical_name: None,
        });
        assert_eq!(got, expected, "{}", f.context(mode));
    }
    Ok(())
}

// RFC 4035 §4.3 "bogus": the zone's signatures do not chain to the DS.
// A validating resolver answers SERVFAIL for bogus data (RFC 4035 §5.5); with
// an Extended DNS Error of the DNSSEC family (RFC 8914 §4.7–4.13, unbound's
// `ede: yes`) trust-AD mode can report it as bogus too.
#[tokio::test]
async fn zone_signed_with_the_wrong_key_is_bogus() -> TestResult {
    let f = Fixture::start().await?;
    let got = f.validate.mx("bogus.example").await;
    assert!(matches!(got, Lookup::Bogus { .. }), "validate: {got:?}");
    let got = f.validate.addresses("mx.bogus.example").await;
    assert!(matches!(got, Lookup::Bogus { .. }), "validate: {got:?}");
    let got = f.trust_ad.mx("bogus.example").await;
    assert!(
        matches!(&got, Lookup::Bogus { reason } if reason.contains("Extended DNS Error")),
        "{got:?}; {}",
        f.context("trust-ad")
    );
    Ok(())
}

// RFC 4035 §3.1.3.2 / §5.4: NODATA proven by an NSEC at the name.
#[tokio::test]
async fn missing_tlsa_is_a_secure_nodata() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        // The name exists (it has an A record) but has no TLSA.
        let got = resolver.tlsa("mx1.dane-ok.example").await;
        assert_eq!(
            got,
            Lookup::NoRecords {
                nxdomain: false,
                dnssec: DnssecStatus::Secure
            },
            "{}",
            f.context(mode)
        );
    }
    Ok(())
}

// RFC 4035 §3.1.3.2 / §5.4: NXDOMAIN proven by NSEC (name and wildcard).
#[tokio::test]
async fn missing_domain_is_a_secure_nxdomain() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let got = resolver.mx("no-such-domain.example").await;
        assert_eq!(
            got,
            Lookup::NoRecords {
                nxdomain: true,
                dnssec: DnssecStatus::Secure
            },
            "{}",
            f.context(mode)
        );
        let got = resolver.addresses("nothing.dane-ok.example").await;
        assert_eq!(
            got,
            Lookup::NoRecords {
                nxdomain: true,
                dnssec: DnssecStatus::Secure
            },
            "{}",
            f.context(mode)
        );
    }
    Ok(())
}

// RFC 7505 §3: "0 ." is the null MX; it reaches the caller as exchange "".
#[tokio::test]
async fn null_mx_comes_back_as_the_empty_exchange() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let got = resolver.mx("nullmx.example").await;
        assert_eq!(got, secure(vec![mx(0, "")]), "{}", f.context(mode));
        assert!(got.records()[0].is_null());
    }
    Ok(())
}

// RFC 5321 §5.1: no MX RRset → the domain itself is the implicit MX; the
// proven absence is what lets the caller use it.
#[tokio::test]
async fn domain_without_mx_is_a_secure_nodata() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let got = resolver.mx("nomx.example").await;
        assert_eq!(
            got,
            Lookup::NoRecords {
                nxdomain: false,
                dnssec: DnssecStatus::Secure
            },
            "{}",
            f.context(mode)
        );
        let got = resolver.addresses("nomx.example").await;
        assert_eq!(got, secure(vec![ip("127.1.5.1")]), "{}", f.context(mode));
    }
    Ok(())
}

// RFC 7672 §2.2.2: the CNAME-expanded name is reported, and the status
// covers the CNAME as well as the addresses.
#[tokio::test]
async fn cname_to_another_signed_zone_is_secure_with_its_canonical_name() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let got = resolver.addresses("mx-alias.dane-ok.example").await;
        let expected = Lookup::Found(Answer {
            records: vec![ip("127.1.2.6")],
            dnssec: DnssecStatus::Secure,
            canonical_name: Some("mx.target.example".to_owned()),
        });
        assert_eq!(got, expected, "{}", f.context(mode));
    }
    Ok(())
}

// RFC 7672 §2.2: a secure TLSA RRset at `_25._tcp.<host>` is published.
#[tokio::test]
async fn host_tlsa_published() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let addresses = resolver.addresses("mx1.dane-ok.example").await;
        let state = resolver
            .host_tlsa(
                "mx1.dane-ok.example",
                Some(DnssecStatus::Secure),
                &addresses,
            )
            .await;
        let expected = TlsaState::Published {
            owner: "_25._tcp.mx1.dane-ok.example".to_owned(),
            records: vec![TlsaRecord {
                usage: 3,
                selector: 1,
                matching: 1,
                data: DIGEST.to_vec(),
            }],
            reference_names: vec!["mx1.dane-ok.example".to_owned()],
        };
        assert_eq!(state, expected, "{}", f.context(mode));
        assert!(state.requires_match());
    }
    Ok(())
}

// RFC 7672 §2.2.2: TLSA is looked up at the CNAME-expanded name first, and
// both names are reference identifiers; the TLSA base domain (where the
// records were found) comes first, as the SNI name (RFC 7672 §8.1).
#[tokio::test]
async fn host_tlsa_follows_the_cname() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let addresses = resolver.addresses("mx-alias.dane-ok.example").await;
        let state = resolver
            .host_tlsa(
                "mx-alias.dane-ok.example",
                Some(DnssecStatus::Secure),
                &addresses,
            )
            .await;
        assert!(
            matches!(&state, TlsaState::Published { owner, reference_names, .. }
                if owner == "_25._tcp.mx.target.example"
                && reference_names == &["mx.target.example".to_owned(), "mx-alias.dane-ok.example".to_owned()]),
            "{state:?}; {}",
            f.context(mode)
        );
    }
    Ok(())
}

// RFC 7672 §2.2.2: insecure address records (here in an unsigned zone named
// by a secure MX) mean no TLSA look-up at all, even though TLSA exists.
#[tokio::test]
async fn host_tlsa_not_applicable_for_insecure_addresses() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let mx = resolver.mx("mixed.example").await;
        assert_eq!(
            mx.dnssec(),
            Some(DnssecStatus::Secure),
            "{}",
            f.context(mode)
        );
        let addresses = resolver.addresses("mx.insecure.example").await;
        let state = resolver
            .host_tlsa("mx.insecure.example", mx.dnssec(), &addresses)
            .await;
        assert_eq!(
            state,
            TlsaState::NotApplicable {
                reason: NotApplicable::InsecureAddresses
            },
            "{}",
            f.context(mode)
        );
    }
    Ok(())
}

// RFC 7672 §2.2: a secure denial of TLSA means DANE does not apply.
#[tokio::test]
async fn host_tlsa_not_applicable_without_tlsa() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let addresses = resolver.addresses("mx-notlsa.dane-ok.example").await;
        let state = resolver
            .host_tlsa(
                "mx-notlsa.dane-ok.example",
                Some(DnssecStatus::Secure),
                &addresses,
            )
            .await;
        assert_eq!(
            state,
            TlsaState::NotApplicable {
                reason: NotApplicable::NoTlsa
            },
            "{}",
            f.context(mode)
        );
    }
    Ok(())
}

// RFC 7672 §2.2: a TLSA look-up that fails (bogus, SERVFAIL) → the host is
// treated as unreachable; never plaintext.
#[tokio::test]
async fn host_tlsa_with_bogus_tlsa_fails() -> TestResult {
    let f = Fixture::start().await?;
    let got = f.validate.tlsa("_25._tcp.mx-bad.dane-ok.example").await;
    assert!(matches!(got, Lookup::Bogus { .. }), "validate: {got:?}");
    for (mode, resolver) in f.both() {
        let addresses = resolver.addresses("mx-bad.dane-ok.example").await;
        assert_eq!(
            addresses.dnssec(),
            Some(DnssecStatus::Secure),
            "{}",
            f.context(mode)
        );
        let state = resolver
            .host_tlsa(
                "mx-bad.dane-ok.example",
                Some(DnssecStatus::Secure),
                &addresses,
            )
            .await;
        assert!(
            matches!(state, TlsaState::LookupFailed { .. }),
            "{state:?}; {}",
            f.context(mode)
        );
    }
    Ok(())
}

// RFC 4035 §4.4: the anchor can be configured as a DS record too; the
// validator turns it into the matching root DNSKEY.
#[tokio::test]
async fn ds_trust_anchor_validates_like_the_key() -> TestResult {
    let world = world()?.start().await?;
    let resolver = MailResolver::new(&config(
        world.addr(),
        DnsMode::Validate,
        Some(world.trust_anchor_ds_path()),
    ))?;
    assert_eq!(
        resolver.mx("dane-ok.example").await.dnssec(),
        Some(DnssecStatus::Secure)
    );
    assert_eq!(
        resolver.mx("insecure.example").await.dnssec(),
        Some(DnssecStatus::Insecure)
    );
    assert!(matches!(
        resolver.mx("bogus.example").await,
        Lookup::Bogus { .. }
    ));
    Ok(())
}

// RFC 4035 §5: with an anchor that is not the root's key nothing chains to
// it, so every signed answer is bogus.
#[tokio::test]
async fn wrong_trust_anchor_makes_everything_bogus() -> TestResult {
    let world = world()?.start().await?;
    let anchor = world.scratch_dir().join("foreign.key");
    std::fs::write(&anchor, foreign_trust_anchor_text()?)?;
    let resolver = MailResolver::new(&config(world.addr(), DnsMode::Validate, Some(anchor)))?;
    for got in [
        resolver.mx("dane-ok.example").await,
        resolver.mx("insecure.example").await,
        resolver.mx("no-such-domain.example").await,
    ] {
        assert!(matches!(got, Lookup::Bogus { .. }), "{got:?}");
    }
    // The same with a DS anchor that matches none of the root's keys.
    let ds = world.scratch_dir().join("foreign.ds");
    std::fs::write(
        &ds,
        ". IN DS 12345 13 2 0000000000000000000000000000000000000000000000000000000000000000\n",
    )?;
    let resolver = MailResolver::new(&config(world.addr(), DnsMode::Validate, Some(ds)))?;
    assert!(matches!(
        resolver.mx("dane-ok.example").await,
        Lookup::Bogus { .. }
    ));
    Ok(())
}

// RFC 6840 §5.7: the AD bit is only trustworthy on a secure channel, so
// trust-ad mode refuses a resolver that is not on loopback.
#[test]
fn trust_ad_refuses_a_remote_resolver() {
    let remote: SocketAddr = SocketAddr::from(([192, 0, 2, 1], 53));
    let got = MailResolver::new(&config(remote, DnsMode::TrustAd, None));
    assert!(
        matches!(got, Err(DnsSetupError::TrustAdNotLoopback { .. })),
        "{got:?}"
    );
    let loopback_v6: SocketAddr = "[::1]:53".parse().unwrap_or(remote);
    assert!(MailResolver::new(&config(loopback_v6, DnsMode::TrustAd, None)).is_ok());
}

#[test]
fn unreadable_or_invalid_anchor_is_refused() -> TestResult {
    let dir = std::env::temp_dir();
    let missing = dir.join("mailtls-no-such-anchor.key");
    let got = MailResolver::new(&config(
        SocketAddr::from(([127, 0, 0, 1], 53)),
        DnsMode::Validate,
        Some(missing),
    ));
    assert!(
        matches!(got, Err(DnsSetupError::TrustAnchorUnreadable { .. })),
        "{got:?}"
    );
    let bad = tempfile_with(". IN A 127.0.0.1\n")?;
    let got = MailResolver::new(&config(
        SocketAddr::from(([127, 0, 0, 1], 53)),
        DnsMode::Validate,
        Some(bad.clone()),
    ));
    let _ = std::fs::remove_file(&bad);
    assert!(
        matches!(&got, Err(e @ DnsSetupError::TrustAnchorInvalid { .. }) if e.to_string().contains("line 1")),
        "{got:?}"
    );
    Ok(())
}

fn tempfile_with(text: &str) -> Result<PathBuf, Box<dyn Error>> {
    let path = std::env::temp_dir().join(format!(
        "mailtls-anchor-{}-{:?}.key",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, text)?;
    Ok(path)
}

// No panic and a clear failure when nobody answers.
#[tokio::test]
async fn silent_resolver_is_a_failure_not_a_denial() -> TestResult {
    // A fresh world's address with the server stopped: nothing listens.
    let addr = world()?.start().await?.addr();
    for mode in [DnsMode::Validate, DnsMode::TrustAd] {
        let resolver = MailResolver::new(&DnsConfig {
            resolver: Some(addr),
            mode,
            trust_anchor: None,
            timeout: Duration::from_millis(300),
        })?;
        let got = resolver.mx("dane-ok.example").await;
        assert!(matches!(got, Lookup::Failed { .. }), "{mode:?}: {got:?}");
    }
    Ok(())
}

// RFC 7766 §5: a truncated UDP answer is asked again over TCP, and keeps
// its DNSSEC status.
#[tokio::test]
async fn large_answer_comes_over_tcp() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let got = resolver.addresses("big.dane-ok.example").await;
        assert_eq!(got.records().len(), 120, "{got:?}; {}", f.context(mode));
        assert_eq!(
            got.dnssec(),
            Some(DnssecStatus::Secure),
            "{}",
            f.context(mode)
        );
    }
    Ok(())
}

// A and AAAA are asked together and both count (RFC 7672 §2.2.2).
#[tokio::test]
async fn dual_stack_host_gets_both_families() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let got = resolver.addresses("mx6.dane-ok.example").await;
        assert_eq!(
            got,
            secure(vec![ip("127.1.2.7"), ip("fd00::7")]),
            "{}",
            f.context(mode)
        );
    }
    Ok(())
}

// RFC 7672 §2.2.2: a secure CNAME to an insecure name makes the addresses
// insecure, so DANE does not apply to that host.
#[tokio::test]
async fn cname_into_an_unsigned_zone_is_insecure() -> TestResult {
    let f = Fixture::start().await?;
    for (mode, resolver) in f.both() {
        let got = resolver.addresses("mx-to-insecure.dane-ok.example").await;
        let expected = Lookup::Found(Answer {
            records: vec![ip("127.1.3.1")],
            dnssec: DnssecStatus::Insecure,
            canonical_name: Some("mx.insecure.example".to_owned()),
        });
        assert_eq!(got, expected, "{}", f.context(mode));
        let state = resolver
            .host_tlsa(
                "mx-to-insecure.dane-ok.example",
                Some(DnssecStatus::Secure),
                &got,
            )
            .await;
        assert_eq!(
            state,
            TlsaState::NotApplicable {
                reason: NotApplicable::InsecureAddresses
            },
            "{}",
            f.context(mode)
        );
    }
    Ok(())
}
