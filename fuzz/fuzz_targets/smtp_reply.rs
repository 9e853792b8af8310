//! SMTP replies come from any server on the Internet (the probe and the
//! relay read them): the parser must never panic, never claim to consume
//! more than it was given, and always make progress.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailtls_smtp::ehlo::Extensions;
use mailtls_smtp::reply::parse_reply;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((reply, used))) = parse_reply(rest) {
        assert!(used > 0 && used <= rest.len());
        let _ = Extensions::from_reply(&reply);
        rest = &rest[used..];
    }
});
