//! What a server's EHLO reply says it can do (RFC 5321 §4.1.1.1, §2.2).
//!
//! The first line of a positive EHLO reply is the server's name and a
//! greeting; every further line is `ehlo-keyword *( SP ehlo-param )`.
//! Keywords are case-insensitive. The probe needs only `STARTTLS`
//! (RFC 3207 §4); the relay will ask for `SIZE`, `PIPELINING` and the rest
//! through [`Extensions::get`].

use crate::reply::Reply;

/// One service extension line of an EHLO reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The keyword, upper-cased (`STARTTLS`, `SIZE`).
    pub keyword: String,
    /// The parameters after the keyword, as sent.
    pub params: Vec<String>,
}

/// The service extensions listed in a positive EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// The domain the server named on the first line (may be empty).
    pub server_name: String,
    /// The extensions, in the order listed.
    pub extensions: Vec<Extension>,
}

impl Extensions {
    /// Reads the extensions from an EHLO reply. The caller checks the code;
    /// lines whose keyword is not `ALPHA / DIGIT *( ALPHA / DIGIT / "-" )`
    /// (RFC 5321 §4.1.1.1) are skipped rather than refused, since a bad line
    /// should not hide the good ones.
    pub fn from_reply(reply: &Reply) -> Extensions {
        let mut lines = reply.lines().iter();
        let server_name = lines
            .next()
            .and_then(|first| first.split_ascii_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        let extensions = lines
            .filter_map(|line| {
                let mut words = line.split_ascii_whitespace();
                let keyword = words.next()?;
                is_keyword(keyword).then(|| Extension {
                    keyword: keyword.to_ascii_uppercase(),
                    params: words.map(str::to_owned).collect(),
                })
            })
            .collect();
        Extensions {
            server_name,
            extensions,
        }
    }

    /// The extension with this keyword (case-insensitive), if listed.
    pub fn get(&self, keyword: &str) -> Option<&Extension> {
        self.extensions
            .iter()
            .find(|e| e.keyword.eq_ignore_ascii_case(keyword))
    }

    /// Whether the server offers STARTTLS (RFC 3207 §4).
    pub fn starttls(&self) -> bool {
        self.get("STARTTLS").is_some()
    }
}

fn is_keyword(word: &str) -> bool {
    let mut bytes = word.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::parse_reply;

    fn extensions(input: &[u8]) -> Extensions {
        let (reply, _) = parse_reply(input).expect("valid").expect("complete");
        Extensions::from_reply(&reply)
    }

    #[test]
    fn starttls_is_found_in_any_case() {
        let ext = extensions(
            b"250-mx.example Hello\r\n250-PIPELINING\r\n250-starttls\r\n250 SIZE 10240000\r\n",
        );
        assert_eq!(ext.server_name, "mx.example");
        assert!(ext.starttls());
        assert_eq!(
            ext.get("size").map(|e| e.params.clone()),
            Some(vec!["10240000".to_owned()])
        );
        assert_eq!(
            ext.get("STARTTLS").map(|e| e.keyword.as_str()),
            Some("STARTTLS")
        );
    }

    #[test]
    fn greeting_line_is_not_an_extension() {
        // RFC 5321 §4.1.1.1: the first line is `Domain [ SP ehlo-greet ]`.
        let ext = extensions(b"250 STARTTLS\r\n");
        assert_eq!(ext.server_name, "STARTTLS");
        assert!(!ext.starttls());
    }

    #[test]
    fn starttls_must_be_the_keyword_not_a_parameter() {
        let ext = extensions(b"250-mx.example\r\n250-X-NOT STARTTLS\r\n250 AUTH PLAIN\r\n");
        assert!(!ext.starttls());
    }

    #[test]
    fn malformed_keywords_are_skipped() {
        let ext = extensions(b"250-mx.example\r\n250-\r\n250--BAD\r\n250-\xff\r\n250 STARTTLS\r\n");
        assert_eq!(ext.extensions.len(), 1);
        assert!(ext.starttls());
    }
}
