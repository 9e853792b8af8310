//! What the relay needs to run, already validated (the binary builds it from
//! the TOML file, SPEC §5; tests build it directly).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mailtls_dns::DnsConfig;

/// A network in CIDR form, for `relay.trusted_networks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Network {
    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix.min(32)))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix.min(128)))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The listeners' certificate and key, PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    /// PEM certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// The relay's configuration.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// EHLO name and banner.
    pub hostname: String,
    /// Where the spool lives (`<data_dir>/spool`).
    pub data_dir: PathBuf,
    /// The inbound MX with STARTTLS (25 in production; SPEC §5).
    pub inbound_listen: Vec<SocketAddr>,
    /// Domains whose users' mail is delivered here (lower-case A-labels).
    pub local_domains: Vec<String>,
    /// The secure domain of SPEC §4 (lower-case A-label), if any.
    pub secure_domain: Option<String>,
    /// Where mail for local users goes: a Maildir per user, or LMTP.
    pub mail_store: crate::local::MailStore,
    /// Submission with STARTTLS (587 in production).
    pub submission_listen: Vec<SocketAddr>,
    /// Submission with implicit TLS (465 in production).
    pub submission_tls_listen: Vec<SocketAddr>,
    /// Clients that may relay without AUTH (an MTA using us as smart host).
    pub trusted_networks: Vec<Network>,
    /// The listeners' certificate.
    pub tls: TlsIdentity,
    /// Largest message accepted (RFC 1870 SIZE). Default 25 MiB.
    pub max_message_size: usize,
    /// Most recipients per message. Default 100 (RFC 5321 §4.5.3.1.8 minimum).
    pub max_recipients: usize,
    /// Most concurrent SMTP sessions. Default 100.
    pub max_connections: usize,
    /// A session idle this long is closed (RFC 5321 §4.5.3.2.7: 5 minutes).
    pub idle_timeout: Duration,
    /// How long a message may stay queued before it bounces. Default 5 days.
    pub queue_lifetime: Duration,
    /// First retry delay; doubles per attempt up to [`RelayConfig::retry_max`].
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Deliveries in progress at once.
    pub delivery_concurrency: usize,
    /// DNS for delivery.
    pub dns: DnsConfig,
    /// Deliver to private, loopback and link-local addresses (SPEC §7;
    /// tests only).
    pub allow_private: bool,
    /// The SMTP port of MX hosts (25; other values for test worlds).
    pub smtp_port: u16,
    /// Time limit of one SMTP dialogue step with a remote server.
    pub smtp_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let net = Network {
            addr: "192.0.2.0".parse().expect("ip"),
            prefix: 24,
        };
        assert!(net.contains("192.0.2.77".parse().expect("ip")));
        assert!(!net.contains("192.0.3.1".parse().expect("ip")));
        assert!(!net.contains("::1".parse().expect("ip")));
        let all = Network {
            addr: "0.0.0.0".parse().expect("ip"),
            prefix: 0,
        };
        assert!(all.contains("203.0.113.9".parse().expect("ip")));
        let host = Network {
            addr: "::1".parse().expect("ip"),
            prefix: 128,
        };
        assert!(host.contains("::1".parse().expect("ip")));
        assert!(!host.contains("::2".parse().expect("ip")));
    }
}
