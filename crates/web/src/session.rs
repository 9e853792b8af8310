//! Sign-in sessions and CSRF tokens for the settings page.
//!
//! A session is a random 256-bit token in a cookie that is `HttpOnly`
//! (scripts cannot read it), `SameSite=Strict` (RFC 6265bis §5.4.7: other
//! sites cannot make the browser send it) and, when the operator says the
//! pages are served over HTTPS, `Secure`. Each session has its own CSRF
//! token, which every form carries as a hidden field and every API write
//! as the `X-CSRF-Token` header; it is compared in constant time. The
//! sign-in form, which has no session yet, uses a double-submit token: a
//! cookie and the same value in the form.
//!
//! Sessions live in memory: a restart signs everyone out, which for a
//! settings page is acceptable and keeps secrets out of the database.
//! They expire after [`SESSION_LIFETIME`]; at most [`MAX_SESSIONS`] exist.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "mailtls_session";
/// The sign-in form's double-submit cookie.
pub const SIGNIN_COOKIE: &str = "mailtls_signin";
/// The header API writes carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest go first).
pub const MAX_SESSIONS: usize = 10_000;

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The account, as stored.
    pub user: String,
    /// The token forms and API writes must carry.
    pub csrf: String,
    expires: Instant,
}

/// The sessions of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Signs `user` in: the new session's cookie token and the session.
    pub fn create(&self, user: &str) -> Option<(String, Session)> {
        let token = random_token()?;
        let session = Session {
            user: user.to_owned(),
            csrf: random_token()?,
            expires: Instant::now() + SESSION_LIFETIME,
        };
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        map.insert(token.clone(), session.clone());
        Some((token, session))
    }

    /// The session the request's cookie names, if it is alive.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<Session> {
        let token = cookie(headers, SESSION_COOKIE)?;
        let mut map = self.lock();
        match map.get(token) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(token);
                None
            }
            None => None,
        }
    }

    /// Ends the session the request's cookie names.
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers, SESSION_COOKIE) {
            self.lock().remove(token);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// 32 random bytes from the operating system, hex.
pub fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The value of cookie `name` in the request, if present (RFC 6265 §5.4).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with the attributes every cookie here gets.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// Compares two tokens without leaking where they differ.
pub fn tokens_match(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; mailtls_session=abc; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn sessions_round_trip_and_end() {
        let sessions = Sessions::default();
        let (token, session) = sessions.create("me@example.org").expect("random");
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={token}")).expect("ascii"),
        );
        let found = sessions.from_headers(&headers).expect("alive");
        assert_eq!(found.user, "me@example.org");
        assert_eq!(found.csrf, session.csrf);
        sessions.remove(&headers);
        assert!(sessions.from_headers(&headers).is_none());
    }

    #[test]
    fn token_comparison() {
        assert!(tokens_match("abcd", "abcd"));
        assert!(!tokens_match("abce", "abcd"));
        assert!(!tokens_match("abc", "abcd"));
        assert!(!tokens_match("", ""));
    }

    #[test]
    fn cookie_attributes() {
        let c = set_cookie("n", "v", Duration::from_secs(60), true);
        assert_eq!(
            c,
            "n=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
    }
}
