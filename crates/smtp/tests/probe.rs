//! The probe against real SMTP servers on loopback port 25, one per
//! behaviour of `mailtls_e2e::smtp_world`. Needs root (port 25) and Linux
//! (all of 127.0.0.0/8 on `lo`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use mailtls_core::probe::{AddressProbe, DaneCheck, ProbeOutcome, TlsFacts};
use mailtls_e2e::pki::{self, TestCa};
use mailtls_e2e::smtp_world::{
    Behaviour, Command, RunningServer, SERVER_NAME, SmtpServer, fresh_loopback_ip,
};
use mailtls_smtp::{ProbeConfig, probe_address};
use mailtls_tls::{DaneParams, TlsClient};

const HELO_NAME: &str = "probe.test";

fn config(timeout: Duration) -> ProbeConfig {
    ProbeConfig {
        helo_name: HELO_NAME.to_owned(),
        timeout,
        port: 25,
        allow_private: true,
    }
}

fn start(behaviour: Behaviour) -> RunningServer {
    SmtpServer::start_on_fresh_ip(behaviour).expect("test SMTP server starts")
}

/// Runs the probe as a spawned task, as `scan` will: this also proves its
/// future is `Send`.
async fn probe_ip(ip: IpAddr, config: &ProbeConfig, dane: Option<&DaneParams>) -> AddressProbe {
    let tls = TlsClient::new().expect("TLS client");
    let (config, dane) = (config.clone(), dane.cloned());
    tokio::spawn(async move { probe_address(&tls, &config, ip, SERVER_NAME, dane.as_ref()).await })
        .await
        .expect("the probe never panics")
}

async fn probe(server: &RunningServer, dane: Option<&DaneParams>) -> AddressProbe {
    probe_ip(server.ip(), &config(Duration::from_secs(10)), dane).await
}

fn expect_tls(probe: &AddressProbe) -> &TlsFacts {
    match &probe.outcome {
        ProbeOutcome::Tls(facts) => facts,
        other => panic!("expected TLS, got {other:?}"),
    }
}

fn dane(records: Vec<mailtls_core::TlsaRecord>) -> DaneParams {
    DaneParams {
        records,
        reference_names: vec![SERVER_NAME.to_owned()],
    }
}

fn cmd(tls: bool, line: &str) -> Command {
    Command {
        tls,
        line: line.to_owned(),
    }
}

// RFC 3207 §4–§4.2: STARTTLS, the handshake, EHLO again inside TLS, QUIT.

#[tokio::test]
async fn starttls_server_gives_tls_facts() {
    let server = start(Behaviour::starttls(&pki::self_signed(SERVER_NAME)));
    let probe = probe(&server, None).await;
    let facts = expect_tls(&probe);
    assert_eq!(facts.version, "TLSv1.3");
    assert!(!facts.legacy);
    assert_eq!(facts.dane, DaneCheck::NotAttempted);
    assert!(
        !facts.pkix_valid,
        "a self-signed certificate is not Web PKI"
    );
    assert_eq!(facts.chain.len(), 1);
    assert!(!probe.discarded_pipelined);
    assert_eq!(server.handshakes(), 1);
}

#[tokio::test]
async fn dialogue_reissues_ehlo_inside_tls_then_quits() {
    let server = start(Behaviour::starttls(&pki::self_signed(SERVER_NAME)));
    expect_tls(&probe(&server, None).await);
    let ehlo = format!("EHLO {HELO_NAME}");
    assert_eq!(
        server.commands(),
        [
            cmd(false, &ehlo),
            cmd(false, "STARTTLS"),
            cmd(true, &ehlo),
            cmd(true, "QUIT")
        ]
    );
}

// RFC 7672 §3.1: DANE through the probe, with TLSA data from the test PKI.

#[tokio::test]
async fn dane_ee_record_matches_the_leaf() {
    let credential = pki::self_signed(SERVER_NAME);
    let server = start(Behaviour::starttls(&credential));
    let probe = probe(&server, Some(&dane(vec![pki::dane_ee(&credential)]))).await;
    assert_eq!(
        expect_tls(&probe).dane,
        DaneCheck::Matched {
            record: 0,
            depth: 0
        }
    );
}

#[tokio::test]
async fn dane_ee_ignores_expiry_and_names() {
    let credential = pki::expired_misnamed();
    let server = start(Behaviour::starttls(&credential));
    let probe = probe(&server, Some(&dane(vec![pki::dane_ee(&credential)]))).await;
    assert!(matches!(expect_tls(&probe).dane, DaneCheck::Matched { .. }));
}

#[tokio::test]
async fn dane_record_for_another_key_is_a_mismatch_after_a_complete_handshake() {
    let server = start(Behaviour::starttls(&pki::self_signed(SERVER_NAME)));
    let other = pki::self_signed(SERVER_NAME);
    let probe = probe(&server, Some(&dane(vec![pki::dane_ee(&other)]))).await;
    assert!(matches!(
        expect_tls(&probe).dane,
        DaneCheck::Mismatch { .. }
    ));
}

#[tokio::test]
async fn dane_ta_matches_a_chain_to_the_ca_for_the_right_name() {
    let ca = TestCa::new("mailtls test CA");
    let server = start(Behaviour::starttls(&ca.issue(SERVER_NAME)));
    let probe = probe(&server, Some(&dane(vec![pki::dane_ta(&ca)]))).await;
    let facts = expect_tls(&probe);
    assert_eq!(facts.chain.len(), 2);
    assert!(
        matches!(facts.dane, DaneCheck::Matched { record: 0, .. }),
        "{:?}",
        facts.dane
    );
}

#[tokio::test]
async fn dane_ta_refuses_a_leaf_for_another_name() {
    let ca = TestCa::new("mailtls test CA");
    let server = start(Behaviour::starttls(&ca.issue("other.test")));
    let probe = probe(&server, Some(&dane(vec![pki::dane_ta(&ca)]))).await;
    assert!(matches!(
        expect_tls(&probe).dane,
        DaneCheck::Mismatch { .. }
    ));
}

// Legacy interop (RFC 7435 opportunistic TLS): TLS 1.0, RSA key transport.

#[tokio::test]
async fn legacy_server_gives_tls_1_0_marked_legacy() {
    let server = start(Behaviour::Legacy);
    let probe = probe(&server, None).await;
    let facts = expect_tls(&probe);
    assert_eq!(facts.version, "TLSv1");
    assert!(facts.legacy);
    assert_eq!(facts.cipher, "AES128-SHA");
    assert_eq!(facts.key_exchange, None);
}

// RFC 3207 §4: no STARTTLS, or STARTTLS refused.

#[tokio::test]
async fn server_without_starttls_is_no_starttls_and_gets_quit() {
    let server = start(Behaviour::NoStarttls);
    let probe = probe(&server, None).await;
    assert_eq!(probe.outcome, ProbeOutcome::NoStarttls);
    let ehlo = format!("EHLO {HELO_NAME}");
    assert_eq!(server.commands(), [cmd(false, &ehlo), cmd(false, "QUIT")]);
}

#[tokio::test]
async fn refused_starttls_reports_the_reply_and_quits_in_plaintext() {
    let server = start(Behaviour::RefuseStarttls);
    let probe = probe(&server, None).await;
    let ProbeOutcome::StarttlsRefused { reply } = &probe.outcome else {
        panic!("expected StarttlsRefused, got {:?}", probe.outcome);
    };
    assert!(reply.starts_with("454"), "{reply}");
    assert_eq!(server.commands().last(), Some(&cmd(false, "QUIT")));
    assert_eq!(server.handshakes(), 0);
}

// RFC 5321 §3.2: EHLO not understood → HELO; an RFC 821 server has no STARTTLS.

#[tokio::test]
async fn helo_only_server_is_no_starttls() {
    let server = start(Behaviour::HeloOnly);
    let probe = probe(&server, None).await;
    assert_eq!(probe.outcome, ProbeOutcome::NoStarttls);
    let commands = server.commands();
    assert_eq!(commands[1], cmd(false, &format!("HELO {HELO_NAME}")));
}

// RFC 5321 §3.1: a 554 greeting.

#[tokio::test]
async fn refusing_banner_is_smtp_failed_with_the_reply() {
    let server = start(Behaviour::RefuseService);
    let probe = probe(&server, None).await;
    let ProbeOutcome::SmtpFailed { reason } = &probe.outcome else {
        panic!("expected SmtpFailed, got {:?}", probe.outcome);
    };
    assert!(reason.contains("554"), "{reason}");
    assert_eq!(server.commands(), [cmd(false, "QUIT")]);
}

#[tokio::test]
async fn garbage_instead_of_a_banner_is_smtp_failed() {
    let server = start(Behaviour::NotSmtp);
    let probe = probe(&server, None).await;
    let ProbeOutcome::SmtpFailed { reason } = &probe.outcome else {
        panic!("expected SmtpFailed, got {:?}", probe.outcome);
    };
    assert!(
        reason.contains("not an SMTP reply") && reason.contains("HTTP/1.1"),
        "{reason}"
    );
}

// CVE-2011-0411 / SPEC §7: plaintext after the 220 to STARTTLS is discarded.

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded_and_flagged() {
    let server = start(Behaviour::pipeline_after_starttls(&pki::self_signed(
        SERVER_NAME,
    )));
    let probe = probe(&server, None).await;
    expect_tls(&probe);
    assert!(probe.discarded_pipelined);
    // The injected "250" was not taken as the answer to anything: EHLO and
    // QUIT inside TLS each still got the server's real reply.
    let ehlo = format!("EHLO {HELO_NAME}");
    assert_eq!(
        &server.commands()[2..],
        [cmd(true, &ehlo), cmd(true, "QUIT")]
    );
}

// A handshake that completes but a session that does not work.

#[tokio::test]
async fn server_closing_right_after_the_handshake_is_handshake_failed() {
    let server = start(Behaviour::close_after_handshake(&pki::self_signed(
        SERVER_NAME,
    )));
    let probe = probe(&server, None).await;
    let ProbeOutcome::HandshakeFailed { reason } = &probe.outcome else {
        panic!("expected HandshakeFailed, got {:?}", probe.outcome);
    };
    assert!(reason.contains("EHLO inside TLS"), "{reason}");
}

// Connection failures and SPEC §7's private addresses.

#[tokio::test]
async fn nothing_listening_is_connect_failed() {
    let probe = probe_ip(fresh_loopback_ip(), &config(Duration::from_secs(5)), None).await;
    assert!(
        matches!(probe.outcome, ProbeOutcome::ConnectFailed { .. }),
        "{:?}",
        probe.outcome
    );
}

#[tokio::test]
async fn restricted_address_is_not_contacted_without_permission() {
    let server = start(Behaviour::NoStarttls);
    let config = ProbeConfig {
        allow_private: false,
        ..config(Duration::from_secs(5))
    };
    let probe = probe_ip(server.ip(), &config, None).await;
    assert_eq!(probe.outcome, ProbeOutcome::NotAllowed);
    assert_eq!(server.connections(), 0);
}

// Limits: time and line length (RFC 5321 §4.5.3).

#[tokio::test]
async fn silent_server_is_smtp_failed_within_the_timeout() {
    let server = start(Behaviour::Silent);
    let started = Instant::now();
    let probe = probe_ip(server.ip(), &config(Duration::from_millis(500)), None).await;
    let elapsed = started.elapsed();
    let ProbeOutcome::SmtpFailed { reason } = &probe.outcome else {
        panic!("expected SmtpFailed, got {:?}", probe.outcome);
    };
    assert!(
        reason.contains("banner") && reason.contains("timed out"),
        "{reason}"
    );
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn stalled_handshake_is_handshake_failed_within_the_timeout() {
    let server = start(Behaviour::StallAfterStarttls);
    let started = Instant::now();
    let probe = probe_ip(server.ip(), &config(Duration::from_millis(500)), None).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let ProbeOutcome::HandshakeFailed { reason } = &probe.outcome else {
        panic!("expected HandshakeFailed, got {:?}", probe.outcome);
    };
    assert!(reason.contains("timed out"), "{reason}");
}

#[tokio::test]
async fn endless_banner_line_is_smtp_failed_by_the_line_limit() {
    let server = start(Behaviour::EndlessLine);
    let probe = probe(&server, None).await;
    let ProbeOutcome::SmtpFailed { reason } = &probe.outcome else {
        panic!("expected SmtpFailed, got {:?}", probe.outcome);
    };
    assert!(reason.contains("longer than"), "{reason}");
}
