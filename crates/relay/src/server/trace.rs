//! Our `Received:` trace header (RFC 5321 §4.4, RFC 5322 §3.6.7), with the
//! protocol keyword of RFC 3848 (`ESMTPS`: over TLS, `ESMTPA`:
//! authenticated, `ESMTPSA`: both) and, as SPEC §2 asks, the TLS facts in a
//! comment: `(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)`.

use std::net::IpAddr;

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

/// RFC 5322 §3.3 date-time in UTC, e.g. `Sun, 29 Nov 2026 05:36:21 +0000`.
pub fn rfc5322_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // Indexing cannot fail: rem_euclid(7) is 0..7, and civil_from_days
    // returns months 1..=12.
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Year, month (1–12) and day (1–31) of a day count since 1970-01-01, in the
/// proleptic Gregorian calendar (the well-known era algorithm: 400-year eras
/// of 146097 days, years starting in March).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_rfc5322_form() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_930_581),
            "Sun, 29 Nov 2026 05:36:21 +0000"
        );
        assert_eq!(rfc5322_date(-1), "Wed, 31 Dec 1969 23:59:59 +0000");
    }

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
