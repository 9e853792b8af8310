//! The one header the session reads: `From:` (RFC 5322 §3.6.2), for the
//! header-based rule of the secure alias (SPEC §4: mail "with an envelope
//! sender or `From:` at the secure domain" must meet the alias's
//! requirement).
//!
//! Only the addr-specs are wanted, not a full RFC 5322 parser: the header
//! section ends at the first empty line, folded lines are unfolded
//! (§2.2.3), and each mailbox's address is taken from its angle brackets
//! (`Name <a@b>`) or, without them, from the comma-separated items holding
//! an `@`. Quoted display names may contain commas and brackets; a display
//! name that looks like an address is never taken instead of the address
//! inside the brackets, because brackets win. At most
//! [`MAX_FROM_ADDRESSES`] addresses are returned.

/// Most addresses read from `From:` fields.
pub const MAX_FROM_ADDRESSES: usize = 20;

/// The addresses in the message's `From:` field(s), in order.
pub fn from_addresses(message: &[u8]) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(field) = &mut current {
                field.push_str(&text);
            }
            continue;
        }
        if let Some(field) = current.take() {
            fields.push(field);
        }
        let is_from = text
            .split_once(':')
            .is_some_and(|(name, _)| name.trim_end().eq_ignore_ascii_case("from"));
        if is_from {
            current = Some(text.into_owned());
        }
    }
    fields.extend(current);
    let mut out = Vec::new();
    for field in fields {
        let Some((_, value)) = field.split_once(':') else {
            continue;
        };
        out.extend(mailbox_addresses(value));
    }
    out.truncate(MAX_FROM_ADDRESSES);
    out
}

/// The addr-specs of a mailbox-list.
fn mailbox_addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    for item in split_outside_quotes(value) {
        let item = item.trim();
        let address = match (item.rfind('<'), item.rfind('>')) {
            (Some(open), Some(close)) if open < close => &item[open + 1..close],
            _ => strip_comments(item),
        };
        let address = address.trim();
        if address.contains('@') {
            out.push(address.to_owned());
        }
    }
    out
}

/// Splits at commas that are outside quoted strings and angle brackets.
fn split_outside_quotes(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut escaped, mut angle) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// `a@b (Name)` → `a@b`.
fn strip_comments(item: &str) -> &str {
    item.split_once('(').map_or(item, |(before, _)| before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_addresses_table() {
        let cases: &[(&str, &[&str])] = &[
            (
                "From: me@secure.example.org\r\n\r\nbody",
                &["me@secure.example.org"],
            ),
            (
                "Subject: x\r\nFROM: Me <me@secure.example.org>\r\n\r\n",
                &["me@secure.example.org"],
            ),
            (
                "From: \"Doe, John <j@evil.example>\" <john@example.org>\r\n\r\n",
                &["john@example.org"],
            ),
            (
                "From: a@x.example, B <b@y.example>\r\n\r\n",
                &["a@x.example", "b@y.example"],
            ),
            (
                "From: Me\r\n <me@secure.example.org>\r\n\r\n",
                &["me@secure.example.org"],
            ),
            ("From: me@x.example (Me Myself)\r\n\r\n", &["me@x.example"]),
            ("Subject: no from\r\n\r\nFrom: body@x.example\r\n", &[]),
            ("X-From: not@this.example\r\n\r\n", &[]),
            ("From: <>\r\n\r\n", &[]),
        ];
        for (message, want) in cases {
            assert_eq!(from_addresses(message.as_bytes()), *want, "{message:?}");
        }
    }

    #[test]
    fn long_lists_are_bounded() {
        let list: Vec<String> = (0..100).map(|i| format!("u{i}@x.example")).collect();
        let message = format!("From: {}\r\n\r\n", list.join(", "));
        assert_eq!(from_addresses(message.as_bytes()).len(), MAX_FROM_ADDRESSES);
    }
}
