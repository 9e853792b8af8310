//! Our `Received:` trace header (RFC 5321 §4.4, RFC 5322 §3.6.7), with the
//! protocol keyword of RFC 3848 (`ESMTPS`: over TLS, `ESMTPA`:
//! authenticated, `ESMTPSA`: both) and, as SPEC §2 asks, the TLS facts in a
//! comment: `(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)`.

use std::net::IpAddr;

use crate::date::rfc5322_date;

/// The TLS facts of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// Cipher suite by its IANA name, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// What a trace header says about the session that brought a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The EHLO/HELO name (syntax-checked by the command parser).
    pub helo: String,
    /// Whether the client said EHLO (ESMTP) rather than HELO.
    pub esmtp: bool,
    /// The client's address.
    pub client_ip: IpAddr,
    /// TLS facts, if the session was encrypted.
    pub tls: Option<TlsInfo>,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
}

/// The complete header field, folded, ending with CRLF.
pub fn received_header(trace: &Trace, hostname: &str, id: &str, now_unix: i64) -> String {
    let ip = match trace.client_ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    let protocol = match (trace.esmtp, trace.tls.is_some(), trace.auth_user.is_some()) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    };
    let mut header = format!(
        "Received: from {} ({ip})\r\n\tby {hostname} (mailtls) with {protocol} id {id}",
        trace.helo
    );
    if let Some(tls) = &trace.tls {
        header.push_str(&format!(
            "\r\n\t(using {} with cipher {})",
            comment_text(&tls.version),
            comment_text(&tls.cipher)
        ));
    }
    if let Some(user) = &trace.auth_user {
        header.push_str(&format!(
            "\r\n\t(authenticated sender: {})",
            comment_text(user)
        ));
    }
    header.push_str(";\r\n\t");
    header.push_str(&rfc5322_date(now_unix));
    header.push_str("\r\n");
    header
}

/// Text safe inside an RFC 5322 comment: no parentheses, backslashes or
/// control characters.
fn comment_text(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '(' | ')' | '\\') && !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3848 §2: ESMTPSA for an authenticated session over TLS.
    #[test]
    fn header_names_tls_and_authentication() {
        let trace = Trace {
            helo: "client.example".into(),
            esmtp: true,
            client_ip: "192.0.2.7".parse().expect("ip"),
            tls: Some(TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_256_GCM_SHA384".into(),
            }),
            auth_user: Some("alice@example.org".into()),
        };
        assert_eq!(
            received_header(&trace, "mail.example.org", "ABC", 0),
            "Received: from client.example ([192.0.2.7])\r\n\
             \tby mail.example.org (mailtls) with ESMTPSA id ABC\r\n\
             \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n\
             \t(authenticated sender: alice@example.org);\r\n\
             \tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        let plain = Trace {
            tls: None,
            auth_user: None,
            client_ip: "::1".parse().expect("ip"),
            ..trace
        };
        let header = received_header(&plain, "h", "ID", 0);
        assert!(header.starts_with(
            "Received: from client.example ([IPv6:::1])\r\n\tby h (mailtls) with ESMTP id ID;"
        ));
    }
}
