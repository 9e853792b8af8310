//! What SMTP clients send our listeners (submission and the inbound MX):
//! framing, command parsing, SASL decoding, the `From:` header reader and
//! the session state machine must never panic, whatever the bytes, and
//! framing must always make progress. The session's requests (password
//! checks, store look-ups, STARTTLS) are answered from the first byte, so
//! every state is reachable.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mailtls_core::sending::EncryptedSending;
use mailtls_relay::server::framing::{LineFramer, Step};
use mailtls_relay::server::headers::from_addresses;
use mailtls_relay::server::session::{Action, AliasOwner, Client, LookupFacts};
use mailtls_relay::server::trace::TlsInfo;
use mailtls_relay::server::{Role, Session, SessionConfig, parse_command, sasl};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else { return };
    let _ = parse_command(input);
    let _ = sasl::parse_plain(input);
    let _ = sasl::decode_base64(&String::from_utf8_lossy(input));
    let _ = from_addresses(input);

    let config = Arc::new(SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 4096,
        max_recipients: 4,
        max_errors: 10,
        max_auth_failures: 3,
        auth_failure_delay: Duration::ZERO,
        role: if first & 8 == 8 { Role::Inbound } else { Role::Submission },
        local_domains: vec!["example.org".into()],
        secure_domain: Some("secure.example.org".into()),
    });
    let client = Client { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), trusted: first & 1 == 1 };
    let mut session = Session::new(config, client, None);
    let mut framer = LineFramer::default();
    let mut out = Vec::new();
    let mut rest = input;
    let limit = if first & 2 == 2 { 512 } else { 1000 };
    while !rest.is_empty() {
        let consumed = match framer.next(rest, limit) {
            Step::Frame(frame, n) => {
                session.on_frame(frame, &mut out);
                n
            }
            Step::NeedMore(n) => {
                if n == 0 {
                    break;
                }
                n
            }
        };
        assert!(consumed > 0 && consumed <= rest.len());
        rest = &rest[consumed..];
        while let Some(action) = out.pop() {
            let mut more = Vec::new();
            match action {
                Action::VerifyPassword { .. } => {
                    session.auth_checked(Ok::<bool, ()>(first & 4 == 4), &mut more)
                }
                Action::Lookup(_) => {
                    let setting = if first & 16 == 16 { EncryptedSending::On } else { EncryptedSending::Off };
                    let facts = LookupFacts {
                        alias_owner: (first & 32 == 32).then(|| AliasOwner {
                            address: "me@example.org".into(),
                            setting,
                        }),
                        user_setting: Some(setting),
                        local_user_exists: first & 64 == 64,
                        memory: Vec::new(),
                    };
                    session.looked_up(Ok::<LookupFacts, ()>(facts), &mut more)
                }
                Action::Enqueue(_) => session.queued(Ok::<String, ()>("ID".into()), &mut more),
                Action::StartTls => session.tls_established(TlsInfo {
                    version: "TLSv1_3".into(),
                    cipher: "TLS13_AES_128_GCM_SHA256".into(),
                }),
                _ => {}
            }
            out.extend(more);
        }
    }
});
