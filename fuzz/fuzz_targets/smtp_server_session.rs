//! What SMTP clients send our submission listeners: framing, command
//! parsing, SASL decoding and the session state machine must never panic,
//! whatever the bytes, and framing must always make progress.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mailtls_relay::server::framing::{LineFramer, Step};
use mailtls_relay::server::session::Client;
use mailtls_relay::server::{Session, SessionConfig, parse_command, sasl};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else { return };
    let _ = parse_command(input);
    let _ = sasl::parse_plain(input);
    let _ = sasl::decode_base64(&String::from_utf8_lossy(input));

    let config = Arc::new(SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 4096,
        max_recipients: 4,
        max_errors: 10,
        max_auth_failures: 3,
        auth_failure_delay: Duration::ZERO,
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
        out.clear();
    }
});
