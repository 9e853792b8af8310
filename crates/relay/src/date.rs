//! Dates as mail headers write them (RFC 5322 §3.3), for the `Received:`
//! trace and the bounce's `Date:` and `Arrival-Date:` (RFC 3464 §2.2.5).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// `Sun, 29 Nov 2026 05:36:21 +0000` for a Unix time, in UTC. Times the
/// format cannot hold (before 1900) are written as the Unix epoch.
pub fn rfc5322_date(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok())
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
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
        assert_eq!(rfc5322_date(i64::MIN), "Thu, 01 Jan 1970 00:00:00 +0000");
    }
}
