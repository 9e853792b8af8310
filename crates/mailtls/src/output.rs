//! How reports look to a person on a terminal, and as CSV.
//!
//! SPEC §1: each verdict has a symbol, a colour and a short text. Colour is
//! never the only signal (the text always says it), and it is off when the
//! output is not a terminal or `NO_COLOR` is set (no-color.org).

use std::fmt::Write;

use mailtls_core::report::{DaneSummary, MxReport};
use mailtls_core::{CheckReport, Level, TlsLevel};

/// Whether to emit ANSI colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// ANSI escape sequences.
    On,
    /// Plain text.
    Off,
}

impl Colour {
    /// On for a terminal unless `NO_COLOR` is set.
    pub fn detect(is_terminal: bool) -> Colour {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if is_terminal && !no_color {
            Colour::On
        } else {
            Colour::Off
        }
    }

    fn paint(self, style: &str, text: &str) -> String {
        match self {
            Colour::On => format!("\x1b[{style}m{text}\x1b[0m"),
            Colour::Off => text.to_owned(),
        }
    }
}

const RED: &str = "1;31";
const GREEN: &str = "1;32";
const GREY: &str = "90";
const DIM: &str = "2";

/// The symbol and its colour for a report (SPEC §1).
fn symbol(report: &CheckReport) -> (&'static str, &'static str) {
    if report.problem.is_some() {
        return ("⚠", RED);
    }
    match report.level {
        Level::Known(TlsLevel::Dane) => ("👍", GREEN),
        Level::Known(TlsLevel::Tls) => ("👍", GREEN),
        Level::Known(TlsLevel::None) => ("✗", RED),
        Level::Unknown => ("?", GREY),
    }
}

/// One report for a person: `symbol status  address  detail`, and with
/// `verbose` the details per MX host.
pub fn human(report: &CheckReport, verbose: bool, colour: Colour) -> String {
    let (sym, style) = symbol(report);
    let mut out = format!(
        "{} {}  {}  {}\n",
        colour.paint(style, sym),
        colour.paint(style, &format!("{:<9}", report.headline())),
        report.address,
        colour.paint(DIM, &report.detail)
    );
    if verbose {
        for mx in &report.mx {
            mx_details(&mut out, mx);
        }
    }
    out
}

fn mx_details(out: &mut String, mx: &MxReport) {
    let dnssec = mx.dnssec.map_or("look-up failed", |d| match d {
        mailtls_core::DnssecStatus::Secure => "secure",
        mailtls_core::DnssecStatus::Insecure => "insecure",
        mailtls_core::DnssecStatus::Bogus => "bogus",
    });
    let _ = writeln!(
        out,
        "    {} (preference {})  level: {}  DNSSEC: {dnssec}",
        mx.host,
        mx.preference,
        mx.level.status_text()
    );
    let addrs: Vec<String> = mx.addresses.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "      addresses: {}",
        if addrs.is_empty() {
            "none".into()
        } else {
            addrs.join(", ")
        }
    );
    let starttls = match mx.starttls {
        Some(true) => "offered",
        Some(false) => "not offered",
        None => "unknown (no answer)",
    };
    let _ = writeln!(out, "      STARTTLS: {starttls}");
    if let (Some(version), Some(cipher)) = (&mx.tls_version, &mx.cipher) {
        let kx = mx.key_exchange.as_deref().unwrap_or("RSA key transport");
        let legacy = if mx.legacy_tls { "  (legacy TLS)" } else { "" };
        let _ = writeln!(out, "      TLS: {version}, {cipher}, {kx}{legacy}");
    }
    if let Some(cert) = &mx.certificate {
        let _ = writeln!(out, "      certificate: {}", cert.subject);
        let _ = writeln!(out, "        issuer: {}", cert.issuer);
        let _ = writeln!(
            out,
            "        expires: {}  sha256: {}",
            cert.not_after, cert.sha256
        );
        let _ = writeln!(
            out,
            "      Web PKI: {}",
            if mx.pkix_valid { "valid" } else { "not valid" }
        );
    }
    for t in &mx.tlsa {
        let mark = match (t.matched, t.usable) {
            (true, _) => "matched",
            (false, true) => "not matched",
            (false, false) => "unusable",
        };
        let _ = writeln!(
            out,
            "      TLSA {} {} {} {}  ({mark})",
            t.usage, t.selector, t.matching, t.data
        );
    }
    let dane = match mx.dane {
        DaneSummary::Ok => "ok",
        DaneSummary::Mismatch => "mismatch",
        DaneSummary::Unusable => "unusable",
        DaneSummary::None => "none",
    };
    let _ = writeln!(out, "      DANE: {dane} ({})", mx.dane_detail);
    if let Some(error) = &mx.error {
        let _ = writeln!(out, "      error: {error}");
    }
}

/// The CSV header for `scan --format csv`.
pub const CSV_HEADER: [&str; 10] = [
    "address",
    "domain",
    "level",
    "status",
    "problem",
    "detail",
    "mx_hosts",
    "tls_versions",
    "dane",
    "checked_at",
];

/// One CSV row (per-MX values joined with spaces).
pub fn csv_row(report: &CheckReport) -> [String; 10] {
    let join = |f: &dyn Fn(&MxReport) -> Option<String>| {
        report.mx.iter().filter_map(f).collect::<Vec<_>>().join(" ")
    };
    [
        report.address.clone(),
        report.domain.clone(),
        report.level.as_str().to_owned(),
        report.status.clone(),
        report
            .problem
            .map(|p| {
                serde_json::to_value(p)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
        report.detail.clone(),
        join(&|m| Some(m.host.clone())),
        join(&|m| m.tls_version.clone()),
        join(&|m| {
            serde_json::to_value(m.dane)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        }),
        report.checked_at.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use mailtls_core::AddressError;

    use super::*;

    #[test]
    fn invalid_address_is_one_plain_line() {
        let report = CheckReport::invalid("foo", &AddressError::MissingAt, SystemTime::UNIX_EPOCH);
        let text = human(&report, true, Colour::Off);
        assert_eq!(text.lines().count(), 1);
        assert!(
            text.contains("invalid address") && text.contains("foo") && text.contains("no '@'"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        let coloured = human(&report, false, Colour::On);
        assert!(coloured.contains("\x1b[1;31m"));
    }

    #[test]
    fn csv_row_names_the_problem() {
        let report = CheckReport::invalid("a@", &AddressError::EmptyDomain, SystemTime::UNIX_EPOCH);
        let row = csv_row(&report);
        assert_eq!(row[2], "unknown");
        assert_eq!(row[4], "invalid_address");
        assert_eq!(row.len(), CSV_HEADER.len());
    }
}
