//! The secure alias and the per-user setting "Encrypted Sending" (SPEC §4),
//! as pure rules over facts.
//!
//! A user's setting is [`EncryptedSending`]: off, on, or on with expert
//! settings. While it is not off the user has the secure alias
//! `local@<secure-domain>`, and mail from the alias (or from the user, when
//! the setting is on) carries a [`SenderRequirement`]: the level every
//! recipient's provider must meet (`tls`, `verified` = DANE or a valid Web
//! PKI certificate for the MX host, `dane`) and optionally a minimum TLS
//! version. The requirement is applied twice:
//!
//! * at submission, from what the TLS memory already knows about the
//!   recipient's domain ([`precheck`]): a provider known not to meet it is
//!   refused at RCPT (or at the end of DATA for a `From:` at the secure
//!   domain), so the mail client shows the error and nothing is sent;
//! * at delivery, by `policy::requirement` before connecting and
//!   [`check_delivery`] after the handshake: an unmet requirement is a
//!   permanent failure (`5.7.10`, RFC 5248 "Encryption Needed") and the
//!   sender gets a bounce that names the recipient and the reason. Never in
//!   plaintext.
//!
//! Inbound (SPEC §4, "receiving at the alias"): [`inbound_recipient`]
//! decides a `RCPT TO` at the secure domain from whether the session is
//! encrypted, its TLS version, and the owner's setting.
//!
//! MTA-STS (RFC 8461) is not implemented yet; `verified` is met by DANE or
//! by a certificate that is valid in the Web PKI for the MX host's name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::level::TlsLevel;
use crate::memory::MemoryEntry;
use crate::probe::TlsFacts;

/// The minimum level every recipient's provider must meet (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MinLevel {
    /// STARTTLS with any certificate.
    Tls,
    /// DANE, or a certificate valid in the Web PKI for the MX host.
    Verified,
    /// DANE (RFC 7672).
    Dane,
}

impl MinLevel {
    /// The setting's name: `tls`, `verified`, `dane`.
    pub fn as_str(self) -> &'static str {
        match self {
            MinLevel::Tls => "tls",
            MinLevel::Verified => "verified",
            MinLevel::Dane => "dane",
        }
    }
}

impl fmt::Display for MinLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MinLevel {
    type Err = SettingError;
    fn from_str(s: &str) -> Result<MinLevel, SettingError> {
        match s {
            "tls" => Ok(MinLevel::Tls),
            "verified" => Ok(MinLevel::Verified),
            "dane" => Ok(MinLevel::Dane),
            _ => Err(SettingError::MinLevel(s.escape_debug().to_string())),
        }
    }
}

/// A minimum TLS protocol version. Versions before 1.2 cannot be required:
/// every version a user could ask for is at least 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 (RFC 8446).
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersion {
    /// The setting's name: `1.2` or `1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }

    /// Whether a negotiated protocol, named as OpenSSL and rustls name it
    /// (`TLSv1.2`, `TLSv1_3`, `TLSv1`), is at least this version. Unknown
    /// names do not meet any minimum.
    pub fn is_met_by(self, protocol: &str) -> bool {
        negotiated_version(protocol).is_some_and(|v| v >= self)
    }
}

/// The version of a negotiated protocol name, when it is 1.2 or later.
fn negotiated_version(protocol: &str) -> Option<TlsVersion> {
    let digits: String = protocol
        .trim_start_matches("TLSv")
        .chars()
        .map(|c| if c == '_' { '.' } else { c })
        .collect();
    match digits.as_str() {
        "1.2" => Some(TlsVersion::Tls12),
        "1.3" => Some(TlsVersion::Tls13),
        _ => None,
    }
}

/// A negotiated protocol as a person reads it: `TLS 1.2` for `TLSv1.2`
/// or `TLSv1_2`; other names as they are.
pub fn protocol_name(protocol: &str) -> String {
    match negotiated_version(protocol) {
        Some(version) => version.to_string(),
        None => protocol.to_owned(),
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS {}", self.as_str())
    }
}

impl FromStr for TlsVersion {
    type Err = SettingError;
    fn from_str(s: &str) -> Result<TlsVersion, SettingError> {
        match s.trim_start_matches("TLSv").trim_start_matches("TLS ") {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            _ => Err(SettingError::TlsVersion(s.escape_debug().to_string())),
        }
    }
}

/// A setting that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// Not `off`, `on` or `expert`.
    #[error("unknown Encrypted Sending value {0:?}: use off, on or expert")]
    Mode(String),
    /// Not `tls`, `verified` or `dane`.
    #[error("unknown minimum level {0:?}: use tls, verified or dane")]
    MinLevel(String),
    /// Not `1.2` or `1.3`.
    #[error("unknown TLS version {0:?}: use 1.2 or 1.3")]
    TlsVersion(String),
    /// Expert values given without the expert mode.
    #[error("--min-level, --min-tls and --inbound-min-tls need encrypted-sending expert")]
    ExpertOnly,
}

/// The expert settings (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertSettings {
    /// The level every recipient's provider must meet.
    pub min_level: MinLevel,
    /// The minimum TLS version for outbound mail, if any.
    pub min_tls: Option<TlsVersion>,
    /// The minimum TLS version for mail received at the secure alias.
    pub inbound_min_tls: Option<TlsVersion>,
}

impl Default for ExpertSettings {
    fn default() -> ExpertSettings {
        ExpertSettings {
            min_level: MinLevel::Tls,
            min_tls: None,
            inbound_min_tls: None,
        }
    }
}

/// The per-user setting "Encrypted Sending" (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum EncryptedSending {
    /// No secure alias; mail leaves under the relay's normal policy.
    #[default]
    Off,
    /// Secure alias on; every recipient needs TLS.
    On,
    /// Secure alias on, with the expert settings.
    Expert(ExpertSettings),
}

impl EncryptedSending {
    /// The mode's name: `off`, `on`, `expert`.
    pub fn mode(&self) -> &'static str {
        match self {
            EncryptedSending::Off => "off",
            EncryptedSending::On => "on",
            EncryptedSending::Expert(_) => "expert",
        }
    }

    /// Builds a setting from its parts as a user types them; expert values
    /// are refused unless the mode is `expert`.
    pub fn from_parts(
        mode: &str,
        min_level: Option<MinLevel>,
        min_tls: Option<TlsVersion>,
        inbound_min_tls: Option<TlsVersion>,
    ) -> Result<EncryptedSending, SettingError> {
        let expert_given = min_level.is_some() || min_tls.is_some() || inbound_min_tls.is_some();
        match mode {
            "off" | "on" if expert_given => Err(SettingError::ExpertOnly),
            "off" => Ok(EncryptedSending::Off),
            "on" => Ok(EncryptedSending::On),
            "expert" => Ok(EncryptedSending::Expert(ExpertSettings {
                min_level: min_level.unwrap_or(MinLevel::Tls),
                min_tls,
                inbound_min_tls,
            })),
            _ => Err(SettingError::Mode(mode.escape_debug().to_string())),
        }
    }

    /// Whether the secure alias exists: exactly while the setting is not off.
    pub fn alias_enabled(&self) -> bool {
        !matches!(self, EncryptedSending::Off)
    }

    /// What mail from this user must meet, or `None` when it is off.
    pub fn outbound(&self) -> Option<SenderRequirement> {
        match self {
            EncryptedSending::Off => None,
            EncryptedSending::On => Some(SenderRequirement::default()),
            EncryptedSending::Expert(expert) => Some(SenderRequirement {
                min_level: expert.min_level,
                min_tls: expert.min_tls,
            }),
        }
    }

    /// The minimum TLS version for mail received at the secure alias.
    pub fn inbound_min_tls(&self) -> Option<TlsVersion> {
        match self {
            EncryptedSending::Expert(expert) => expert.inbound_min_tls,
            _ => None,
        }
    }
}

/// What a message from a secure sender requires of every recipient's
/// provider. Travels with the message in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderRequirement {
    /// The level.
    pub min_level: MinLevel,
    /// The minimum TLS version, if any.
    pub min_tls: Option<TlsVersion>,
}

impl Default for SenderRequirement {
    fn default() -> SenderRequirement {
        SenderRequirement {
            min_level: MinLevel::Tls,
            min_tls: None,
        }
    }
}

impl fmt::Display for SenderRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.min_level {
            MinLevel::Tls => f.write_str("encrypted delivery (TLS)")?,
            MinLevel::Verified => {
                f.write_str("verified encrypted delivery (DANE or a valid certificate)")?
            }
            MinLevel::Dane => f.write_str("DANE-authenticated delivery")?,
        }
        if let Some(version) = self.min_tls {
            write!(f, " with {version} or newer")?;
        }
        Ok(())
    }
}

/// What the TLS memory says about a recipient domain before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Precheck {
    /// Its last observation meets the requirement.
    Meets,
    /// Known not to meet it; the reason names what was seen.
    Fails(String),
    /// Not known (never seen, or `verified` needs the certificate checked):
    /// delivery will find out.
    Unknown,
}

/// SPEC §4 at submission: judges a recipient domain from its memory entry
/// (the last observation: what the provider does now, not its best).
pub fn precheck(requirement: &SenderRequirement, domain_memory: Option<&MemoryEntry>) -> Precheck {
    let Some(entry) = domain_memory else {
        return Precheck::Unknown;
    };
    let domain = entry.key.name();
    match entry.last_level {
        TlsLevel::None => {
            return Precheck::Fails(format!(
                "{domain} does not accept encrypted mail (no SSL); the sender requires {requirement}"
            ));
        }
        TlsLevel::Tls if requirement.min_level == MinLevel::Dane => {
            return Precheck::Fails(format!(
                "{domain} offers TLS without DANE (SSL ok, not DANE ok); the sender requires {requirement}"
            ));
        }
        TlsLevel::Tls | TlsLevel::Dane => {}
    }
    if let (Some(min), Some(protocol)) = (requirement.min_tls, entry.protocol.as_deref())
        && !min.is_met_by(protocol)
    {
        return Precheck::Fails(format!(
            "{domain} offers only {}; the sender requires {requirement}",
            protocol_name(protocol)
        ));
    }
    if requirement.min_level == MinLevel::Verified && entry.last_level != TlsLevel::Dane {
        return Precheck::Unknown;
    }
    Precheck::Meets
}

/// SPEC §4 after the handshake with a host, for a message with a sender
/// requirement: `Err` (permanent, [`crate::status::SmtpStatus::ENCRYPTION_NEEDED`]) when the
/// connection does not meet it, so the message is not sent there.
/// `level` is what `policy::decide` allowed.
pub fn check_delivery(
    requirement: &SenderRequirement,
    level: TlsLevel,
    facts: Option<&TlsFacts>,
) -> Result<(), String> {
    let Some(facts) = facts.filter(|_| level >= TlsLevel::Tls) else {
        return Err(format!(
            "the server offers no encryption (no SSL); the sender requires {requirement}"
        ));
    };
    match requirement.min_level {
        MinLevel::Dane if level < TlsLevel::Dane => {
            return Err(format!(
                "the server is not DANE-authenticated; the sender requires {requirement}"
            ));
        }
        MinLevel::Verified if level < TlsLevel::Dane && !facts.pkix_valid => {
            return Err(format!(
                "the server's certificate is neither DANE-authenticated nor valid in the Web PKI for its name; the sender requires {requirement}"
            ));
        }
        _ => {}
    }
    if let Some(min) = requirement.min_tls
        && !min.is_met_by(&facts.version)
    {
        return Err(format!(
            "the server negotiated {}; the sender requires {requirement}",
            protocol_name(&facts.version)
        ));
    }
    Ok(())
}

/// How the inbound MX answers a `RCPT TO` at the secure domain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum InboundDecision {
    /// Accept, for the owner's mailbox.
    Accept,
    /// The alias does not exist (no such user, or the setting is off):
    /// `550 5.1.1`.
    NoSuchUser,
    /// Refuse with a permanent `5.7.10`: the text says why.
    EncryptionRequired(String),
}

/// SPEC §4, receiving at the alias: a secure alias takes mail only on a
/// session protected by TLS (and, under expert settings, with at least the
/// owner's minimum version). `setting` is the owner's, `None` when no user
/// owns the alias; `session_tls` is the negotiated protocol, `None` on a
/// plaintext session.
pub fn inbound_recipient(
    alias: &str,
    setting: Option<&EncryptedSending>,
    session_tls: Option<&str>,
) -> InboundDecision {
    let Some(setting) = setting.filter(|s| s.alias_enabled()) else {
        return InboundDecision::NoSuchUser;
    };
    let Some(protocol) = session_tls else {
        return InboundDecision::EncryptionRequired(format!(
            "<{alias}> accepts mail only over an encrypted connection: use STARTTLS (encryption required)"
        ));
    };
    if let Some(min) = setting.inbound_min_tls()
        && !min.is_met_by(protocol)
    {
        return InboundDecision::EncryptionRequired(format!(
            "<{alias}> accepts mail only over {min} or newer, not {} (encryption required)",
            protocol_name(protocol)
        ));
    }
    InboundDecision::Accept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryKey;
    use crate::probe::DaneCheck;

    fn entry(last: TlsLevel, protocol: Option<&str>) -> MemoryEntry {
        MemoryEntry {
            key: MemoryKey::domain("example.net"),
            first_tls_at: None,
            last_tls_at: None,
            last_seen_at: 100,
            best_level: last,
            last_level: last,
            protocol: protocol.map(str::to_owned),
            cipher: None,
            cert_sha256: None,
            last_failure: None,
            last_failure_at: None,
        }
    }

    fn facts(version: &str, pkix_valid: bool) -> TlsFacts {
        TlsFacts {
            version: version.into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            key_exchange: None,
            legacy: false,
            chain: Vec::new(),
            pkix_valid,
            dane: DaneCheck::NotAttempted,
        }
    }

    const TLS: SenderRequirement = SenderRequirement {
        min_level: MinLevel::Tls,
        min_tls: None,
    };
    const VERIFIED: SenderRequirement = SenderRequirement {
        min_level: MinLevel::Verified,
        min_tls: None,
    };
    const DANE: SenderRequirement = SenderRequirement {
        min_level: MinLevel::Dane,
        min_tls: None,
    };
    const TLS13: SenderRequirement = SenderRequirement {
        min_level: MinLevel::Tls,
        min_tls: Some(TlsVersion::Tls13),
    };

    #[test]
    fn settings_parse_as_typed() {
        assert_eq!(
            EncryptedSending::from_parts("on", None, None, None),
            Ok(EncryptedSending::On)
        );
        assert_eq!(
            EncryptedSending::from_parts("on", Some(MinLevel::Dane), None, None),
            Err(SettingError::ExpertOnly)
        );
        assert_eq!(
            EncryptedSending::from_parts("expert", Some(MinLevel::Dane), None, None),
            Ok(EncryptedSending::Expert(ExpertSettings {
                min_level: MinLevel::Dane,
                min_tls: None,
                inbound_min_tls: None
            }))
        );
        assert!(EncryptedSending::from_parts("maybe", None, None, None).is_err());
        assert_eq!("1.3".parse(), Ok(TlsVersion::Tls13));
        assert_eq!("TLSv1.2".parse(), Ok(TlsVersion::Tls12));
        assert!("1.1".parse::<TlsVersion>().is_err());
        assert!("weird".parse::<MinLevel>().is_err());
    }

    #[test]
    fn the_alias_exists_exactly_while_the_setting_is_not_off() {
        assert!(!EncryptedSending::Off.alias_enabled());
        assert!(EncryptedSending::On.alias_enabled());
        assert!(EncryptedSending::Expert(ExpertSettings::default()).alias_enabled());
        assert_eq!(EncryptedSending::Off.outbound(), None);
        assert_eq!(EncryptedSending::On.outbound(), Some(TLS));
    }

    #[test]
    fn protocol_names_of_both_libraries_compare() {
        assert!(TlsVersion::Tls12.is_met_by("TLSv1.2"));
        assert!(TlsVersion::Tls12.is_met_by("TLSv1.3"));
        assert!(TlsVersion::Tls12.is_met_by("TLSv1_3"));
        assert!(!TlsVersion::Tls13.is_met_by("TLSv1.2"));
        assert!(!TlsVersion::Tls12.is_met_by("TLSv1"));
        assert!(!TlsVersion::Tls12.is_met_by("SSLv3"));
    }

    /// SPEC §4, sending from the alias: what the memory already knows.
    #[test]
    fn precheck_table() {
        let cases: &[(&str, SenderRequirement, Option<MemoryEntry>, bool, bool)] = &[
            // (case, requirement, memory, fails, unknown)
            ("never seen", TLS, None, false, true),
            (
                "no SSL fails tls",
                TLS,
                Some(entry(TlsLevel::None, None)),
                true,
                false,
            ),
            (
                "SSL ok meets tls",
                TLS,
                Some(entry(TlsLevel::Tls, Some("TLSv1.3"))),
                false,
                false,
            ),
            (
                "SSL ok fails dane",
                DANE,
                Some(entry(TlsLevel::Tls, Some("TLSv1.3"))),
                true,
                false,
            ),
            (
                "DANE ok meets dane",
                DANE,
                Some(entry(TlsLevel::Dane, Some("TLSv1.3"))),
                false,
                false,
            ),
            (
                "SSL ok: verified needs the certificate",
                VERIFIED,
                Some(entry(TlsLevel::Tls, None)),
                false,
                true,
            ),
            (
                "DANE ok meets verified",
                VERIFIED,
                Some(entry(TlsLevel::Dane, None)),
                false,
                false,
            ),
            (
                "TLS 1.2 fails min 1.3",
                TLS13,
                Some(entry(TlsLevel::Tls, Some("TLSv1.2"))),
                true,
                false,
            ),
            (
                "TLS 1.3 meets min 1.3",
                TLS13,
                Some(entry(TlsLevel::Tls, Some("TLSv1.3"))),
                false,
                false,
            ),
        ];
        for (case, requirement, memory, fails, unknown) in cases {
            let got = precheck(requirement, memory.as_ref());
            assert_eq!(matches!(got, Precheck::Fails(_)), *fails, "{case}: {got:?}");
            assert_eq!(got == Precheck::Unknown, *unknown, "{case}: {got:?}");
        }
        let Precheck::Fails(reason) = precheck(&TLS, Some(&entry(TlsLevel::None, None))) else {
            unreachable!()
        };
        assert!(
            reason.contains("example.net") && reason.contains("no SSL"),
            "{reason}"
        );
    }

    /// SPEC §4: what a connection must be for a secure sender's message.
    #[test]
    fn check_delivery_table() {
        let ok = facts("TLSv1.3", false);
        let valid = facts("TLSv1.3", true);
        let old = facts("TLSv1.2", true);
        let cases: &[(&str, SenderRequirement, TlsLevel, Option<&TlsFacts>, bool)] = &[
            ("plaintext never meets", TLS, TlsLevel::None, None, false),
            ("tls met by any TLS", TLS, TlsLevel::Tls, Some(&ok), true),
            ("dane needs DANE", DANE, TlsLevel::Tls, Some(&valid), false),
            ("dane met by DANE", DANE, TlsLevel::Dane, Some(&ok), true),
            (
                "verified: invalid Web PKI fails",
                VERIFIED,
                TlsLevel::Tls,
                Some(&ok),
                false,
            ),
            (
                "verified: valid Web PKI meets",
                VERIFIED,
                TlsLevel::Tls,
                Some(&valid),
                true,
            ),
            (
                "verified: DANE meets",
                VERIFIED,
                TlsLevel::Dane,
                Some(&ok),
                true,
            ),
            (
                "min 1.3: 1.2 fails",
                TLS13,
                TlsLevel::Tls,
                Some(&old),
                false,
            ),
            ("min 1.3: 1.3 meets", TLS13, TlsLevel::Dane, Some(&ok), true),
        ];
        for (case, requirement, level, facts, meets) in cases {
            let got = check_delivery(requirement, *level, *facts);
            assert_eq!(got.is_ok(), *meets, "{case}: {got:?}");
        }
    }

    /// SPEC §4, receiving at the alias.
    #[test]
    fn inbound_table() {
        let expert13 = EncryptedSending::Expert(ExpertSettings {
            inbound_min_tls: Some(TlsVersion::Tls13),
            ..ExpertSettings::default()
        });
        let a = "me@secure.example.org";
        assert_eq!(
            inbound_recipient(a, None, Some("TLSv1.3")),
            InboundDecision::NoSuchUser
        );
        assert_eq!(
            inbound_recipient(a, Some(&EncryptedSending::Off), Some("TLSv1.3")),
            InboundDecision::NoSuchUser
        );
        let InboundDecision::EncryptionRequired(text) =
            inbound_recipient(a, Some(&EncryptedSending::On), None)
        else {
            unreachable!()
        };
        assert!(
            text.contains("encryption required") && text.contains(a),
            "{text}"
        );
        assert_eq!(
            inbound_recipient(a, Some(&EncryptedSending::On), Some("TLSv1.2")),
            InboundDecision::Accept
        );
        assert!(matches!(
            inbound_recipient(a, Some(&expert13), Some("TLSv1.2")),
            InboundDecision::EncryptionRequired(_)
        ));
        assert_eq!(
            inbound_recipient(a, Some(&expert13), Some("TLSv1.3")),
            InboundDecision::Accept
        );
    }
}
