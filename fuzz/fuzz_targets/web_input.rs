//! What browsers and webmail systems send the web side (issue #5): the
//! check API's query string, the `Cookie` header, and the HTML escaping of
//! anything echoed back. No panic, whatever the bytes; the limits hold;
//! escaped text never contains markup.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use mailtls_web::api::{MAX_ADDRESS_BYTES, addresses};
use mailtls_web::html::esc;
use mailtls_web::session::cookie;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(list) = addresses(Some(&text), 20) {
        assert!(!list.is_empty() && list.len() <= 20);
        assert!(list.iter().all(|a| a.len() <= MAX_ADDRESS_BYTES && !a.is_empty()));
    }
    let escaped = esc(&text);
    assert!(!escaped.contains(['<', '>', '"', '\'']));
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, value);
        let _ = cookie(&headers, "mailtls_session");
    }
});
