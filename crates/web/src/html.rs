//! Server-rendered HTML: the layout, the symbols, a report laid out for a
//! person (SPEC §1: symbol, status text, details per MX host).
//!
//! Hand-written rather than a template engine: the pages are few and
//! small, and one escape function that every interpolation goes through
//! ([`esc`], tested below and by the XSS tests) is easier to audit than a
//! proc-macro dependency. Rule for this module: every `{}` that can hold
//! text from a request, a DNS answer or a certificate is `esc(...)`.
//!
//! Accessibility (issue #5): every symbol has a text alternative
//! (`role="img"` with `aria-label`) and the status text is always written
//! beside it, so colour is never the only signal.

use std::fmt::Write;

use mailtls_core::report::{DaneSummary, MxReport};
use mailtls_core::{CheckReport, DnssecStatus, Level, TlsLevel};

/// Escapes text for HTML element content and quoted attribute values
/// (the five characters of the OWASP rule, and NUL).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The symbol, its CSS class and its text alternative for a report
/// (SPEC §1 table; the same symbols as the command line).
pub fn symbol(report: &CheckReport) -> (&'static str, &'static str, String) {
    if let Some(problem) = report.problem {
        return ("⚠", "problem", problem.status_text().to_owned());
    }
    let (sym, class) = match report.level {
        Level::Known(TlsLevel::Dane) => ("👍", "dane"),
        Level::Known(TlsLevel::Tls) => ("👍", "tls"),
        Level::Known(TlsLevel::None) => ("✗", "none"),
        Level::Unknown => ("?", "unknown"),
    };
    (sym, class, report.status.clone())
}

/// Which page the navigation marks as current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/`.
    Check,
    /// `/compose`.
    Compose,
    /// `/settings`.
    Settings,
    /// None.
    Other,
}

/// A whole page. `head_extra` is trusted markup (never request data).
pub fn page(
    title: &str,
    nav: Nav,
    signed_in: Option<&str>,
    head_extra: &str,
    body: &str,
) -> String {
    let link = |href: &str, label: &str, this: Nav| {
        if nav == this {
            format!(r#"<a href="{href}" aria-current="page">{label}</a>"#)
        } else {
            format!(r#"<a href="{href}">{label}</a>"#)
        }
    };
    let who = match signed_in {
        Some(user) => format!(r#"<span class="who">Signed in as {}</span>"#, esc(user)),
        None => String::new(),
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · mailtls</title>
<link rel="stylesheet" href="/assets/style.css">
{head_extra}</head>
<body>
<header><nav aria-label="main"><strong class="brand">mailtls</strong> {check} {compose} {settings} {who}</nav></header>
<main>
{body}
</main>
<footer><p>Symbols: <span class="sym sym-dane">👍</span> DANE ok · <span class="sym sym-tls">👍</span> SSL ok · <span class="sym sym-none">✗</span> no SSL · <span class="sym sym-unknown">?</span> SSL ? (not known yet) · <span class="sym sym-problem">⚠</span> mail would not be delivered</p></footer>
</body>
</html>
"#,
        title = esc(title),
        check = link("/", "Check", Nav::Check),
        compose = link("/compose", "Compose", Nav::Compose),
        settings = link("/settings", "Settings", Nav::Settings),
    )
}

/// A report laid out for a person: the verdict line, then per MX host
/// (preference order) the facts SPEC §1 lists.
pub fn report(report: &CheckReport) -> String {
    let (sym, class, alt) = symbol(report);
    let mut out = format!(
        r#"<section class="result result-{class}" aria-labelledby="verdict">
<h2 id="verdict"><span class="sym sym-{class}" role="img" aria-label="{alt}">{sym}</span> <span class="status">{headline}</span> <span class="addr">{address}</span></h2>
<p class="detail">{detail}</p>
<p class="meta">Checked {checked} · answer from {source}</p>
"#,
        alt = esc(&alt),
        headline = esc(report.headline()),
        address = esc(&report.address),
        detail = esc(&report.detail),
        checked = esc(&report.checked_at),
        source = match report.source {
            mailtls_core::report::Source::Probe => "a live probe of the mail servers",
            mailtls_core::report::Source::Memory => "the TLS memory (what our servers saw before)",
            mailtls_core::report::Source::None => "nothing (the input is not an address)",
        },
    );
    for mx in &report.mx {
        mx_details(&mut out, mx);
    }
    out.push_str("</section>\n");
    out
}

fn dnssec(status: Option<DnssecStatus>) -> &'static str {
    match status {
        Some(DnssecStatus::Secure) => "secure (signed and validated)",
        Some(DnssecStatus::Insecure) => "insecure (not signed)",
        Some(DnssecStatus::Bogus) => "bogus (validation failed)",
        None => "—",
    }
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "no answer",
    }
}

fn mx_details(out: &mut String, mx: &MxReport) {
    let row = |out: &mut String, key: &str, value: &str| {
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{key}</th><td>{}</td></tr>",
            esc(value)
        );
    };
    let level = match mx.level {
        Level::Known(l) => Level::Known(l).status_text(),
        Level::Unknown => "not deliverable",
    };
    let _ = write!(
        out,
        "<article class=\"mx\">\n<h3>MX {} <span class=\"pref\">(preference {})</span> — {}</h3>\n<table>\n",
        esc(&mx.host),
        mx.preference,
        esc(level)
    );
    let addresses = mx
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    row(
        out,
        "Addresses",
        if addresses.is_empty() {
            "—"
        } else {
            &addresses
        },
    );
    row(out, "DNSSEC: MX", dnssec(mx.dnssec_lookups.mx));
    row(
        out,
        "DNSSEC: addresses",
        dnssec(mx.dnssec_lookups.addresses),
    );
    row(out, "DNSSEC: TLSA", dnssec(mx.dnssec_lookups.tlsa));
    row(out, "STARTTLS offered", yes_no(mx.starttls));
    row(out, "TLS version", mx.tls_version.as_deref().unwrap_or("—"));
    row(out, "Cipher", mx.cipher.as_deref().unwrap_or("—"));
    row(
        out,
        "Key exchange",
        mx.key_exchange.as_deref().unwrap_or("—"),
    );
    if mx.legacy_tls {
        row(
            out,
            "Legacy TLS",
            "yes: an old protocol or cipher (encrypted, but weak)",
        );
    }
    if let Some(cert) = &mx.certificate {
        row(out, "Certificate subject", &cert.subject);
        row(out, "Certificate issuer", &cert.issuer);
        row(out, "Certificate expires", &cert.not_after);
        row(out, "Certificate SHA-256", &cert.sha256);
    }
    row(
        out,
        "Valid in the Web PKI",
        if mx.pkix_valid { "yes" } else { "no" },
    );
    let dane = match mx.dane {
        DaneSummary::Ok => "ok",
        DaneSummary::Mismatch => "mismatch",
        DaneSummary::Unusable => "unusable",
        DaneSummary::None => "none",
    };
    row(out, "DANE", &format!("{dane}: {}", mx.dane_detail));
    for t in &mx.tlsa {
        row(
            out,
            "TLSA record",
            &format!(
                "{} {} {} {}{}{}",
                t.usage,
                t.selector,
                t.matching,
                t.data,
                if t.usable { "" } else { " (unusable)" },
                if t.matched { " — matched" } else { "" }
            ),
        );
    }
    if let Some(error) = &mx.error {
        row(out, "Problem", error);
    }
    out.push_str("</table>\n</article>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            esc(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(esc("plain ünïcode 👍"), "plain ünïcode 👍");
    }

    #[test]
    fn an_invalid_address_is_escaped_in_the_report() {
        let error = mailtls_core::Address::parse("<img src=x onerror=alert(1)>")
            .expect_err("not an address");
        let r = CheckReport::invalid(
            "<img src=x onerror=alert(1)>",
            &error,
            std::time::SystemTime::UNIX_EPOCH,
        );
        let html = report(&r);
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
    }
}
