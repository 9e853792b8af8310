//! Addresses and domains are typed by users and read from scan files: any
//! input gets a value or a one-line error, never a panic, and a parsed
//! domain is always plain lower-case LDH within the DNS limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailtls_core::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Target::parse_address_or_domain(text) {
        Ok(target) => {
            let domain = target.domain().as_str();
            assert!(domain.len() <= 253);
            assert!(domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
        }
        Err(error) => assert!(!error.to_string().contains('\n')),
    }
});
