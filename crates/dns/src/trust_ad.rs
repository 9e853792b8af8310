//! Trust-AD mode: a validating resolver on this machine does the DNSSEC work
//! and we believe its AD bit, as Postfix (`smtp_dns_support_level = dnssec`)
//! and maddy do.
//!
//! RFC 4035 §3.2.3 and RFC 6840 §5.7/§5.8: a validating resolver sets AD
//! only on data it validated, and only for a client that asked with DO=1 or
//! AD=1; the client may trust the bit only over a secure channel, which a
//! loopback address is (the resolver is therefore refused anywhere else, see
//! `MailResolver::new`). We send RD=1, AD=1, DO=1.
//!
//! * AD=1 → Secure, for an answer or for a denial (NXDOMAIN/NODATA);
//! * AD=0 → Insecure;
//! * SERVFAIL with an Extended DNS Error (RFC 8914 §4) of the DNSSEC family
//!   (6 DNSSEC Bogus … 12 NSEC Missing) → Bogus: the resolver says why it
//!   failed (unbound does with `ede: yes`).
//! * any other SERVFAIL → Failed. A validating resolver answers SERVFAIL for
//!   bogus data (RFC 4035 §5.5), but also for unreachable servers, and
//!   without an EDE the two cannot be told apart, so the reason says "may be
//!   bogus"; core defers on Failed exactly as on Bogus.
//!
//! hickory-resolver's high-level `Resolver` neither sets AD in its queries
//! nor shows the AD bit of answers when it is not validating itself, so this
//! module talks to the resolver with hickory-net's `Client`: UDP first, TCP
//! when the answer is truncated (RFC 7766 §5).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::client::Client;
use hickory_net::proto::op::{DnsRequest, DnsRequestOptions, DnsResponse, Query, ResponseCode};
use hickory_net::proto::rr::rdata::opt::EdnsOption;
use hickory_net::proto::rr::{Name, RData, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsRequestSender, FirstAnswer};
use hickory_net::{DnsHandle, NetError};
use mailtls_core::dns::{Answer, DnssecStatus, Lookup};
use tracing::debug;

use crate::records::{follow_cnames, name_text};

/// EDNS payload size we advertise (DNS flag day 2020): bigger answers come
/// truncated and are fetched again over TCP.
const EDNS_PAYLOAD: u16 = 1232;

/// The AD-trusting back end: just the resolver's address and a time limit.
pub(crate) struct AdClient {
    server: SocketAddr,
    timeout: Duration,
}

impl AdClient {
    pub(crate) fn new(server: SocketAddr, timeout: Duration) -> AdClient {
        AdClient { server, timeout }
    }

    /// Asks the resolver and types the answer by its AD bit.
    pub(crate) async fn lookup(&self, name: &Name, rtype: RecordType) -> Lookup<RData> {
        let response = match self.exchange_udp(name, rtype).await {
            Ok(response) if response.truncation => {
                debug!(%name, %rtype, "truncated over UDP, asking again over TCP");
                self.exchange_tcp(name, rtype).await
            }
            other => other,
        };
        match response {
            Ok(response) => from_response(name, rtype, &response),
            Err(NetError::Timeout) => Lookup::Failed {
                reason: format!("resolver {} timed out", self.server),
            },
            Err(error) => Lookup::Failed {
                reason: format!("resolver {}: {error}", self.server),
            },
        }
    }

    fn request(name: &Name, rtype: RecordType) -> DnsRequest {
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        options.edns_payload_len = EDNS_PAYLOAD;
        options.edns_set_dnssec_ok = true;
        options.recursion_desired = true;
        let mut request = DnsRequest::from_query(Query::query(name.clone(), rtype), options);
        request.metadata.authentic_data = true;
        request
    }

    /// One query over UDP, from a new randomly chosen port, with hickory's
    /// time limit, retries and response checks (source, ID, question).
    ///
    /// The request goes straight to the UDP stream: a `Client` would add a
    /// channel and a background task (spawned per query) that only hands
    /// the request to the same `send_message`.
    async fn exchange_udp(&self, name: &Name, rtype: RecordType) -> Result<DnsResponse, NetError> {
        let mut stream = UdpClientStream::builder(self.server, TokioRuntimeProvider::default())
            .with_timeout(Some(self.timeout))
            .build();
        stream
            .send_message(Self::request(name, rtype))
            .first_answer()
            .await
    }

    async fn exchange_tcp(&self, name: &Name, rtype: RecordType) -> Result<DnsResponse, NetError> {
        let (connect, handle) = TcpClientStream::new(
            self.server,
            None,
            Some(self.timeout),
            TokioRuntimeProvider::default(),
        );
        let stream = connect.await?;
        let (client, background) =
            Client::<TokioRuntimeProvider>::with_timeout(stream, handle, self.timeout);
        let background = tokio::spawn(background);
        let response = client.send(Self::request(name, rtype)).first_answer().await;
        background.abort();
        response
    }
}

/// Types a resolver's response by its RCODE and AD bit.
pub(crate) fn from_response(
    qname: &Name,
    rtype: RecordType,
    response: &DnsResponse,
) -> Lookup<RData> {
    let dnssec = if response.authentic_data {
        DnssecStatus::Secure
    } else {
        DnssecStatus::Insecure
    };
    match response.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => {
            return Lookup::NoRecords {
                nxdomain: true,
                dnssec,
            };
        }
        ResponseCode::ServFail => {
            if let Some((code, text)) = dnssec_extended_error(response) {
                return Lookup::Bogus {
                    reason: format!(
                        "the validating resolver reports Extended DNS Error {code}{text}"
                    ),
                };
            }
            return Lookup::Failed {
                reason: "the validating resolver answered SERVFAIL (the answer may be DNSSEC-bogus, or a server unreachable)"
                    .to_owned(),
            };
        }
        code => {
            return Lookup::Failed {
                reason: format!("the resolver answered {code}"),
            };
        }
    }
    if response.truncation {
        return Lookup::Failed {
            reason: "the answer was truncated even over TCP".to_owned(),
        };
    }
    let chain = match follow_cnames(qname, rtype, &response.answers) {
        Ok(chain) => chain,
        Err(reason) => return Lookup::Failed { reason },
    };
    if chain.records.is_empty() {
        return Lookup::NoRecords {
            nxdomain: false,
            dnssec,
        };
    }
    Lookup::Found(Answer {
        records: chain.records.iter().map(|r| r.data.clone()).collect(),
        dnssec,
        canonical_name: chain.canonical.as_ref().map(name_text),
    })
}

/// RFC 8914 §5.2: the option code of an Extended DNS Error.
const EDE_OPTION: u16 = 15;
/// RFC 8914 §4.7–§4.13: DNSSEC Bogus, Signature Expired, Signature Not Yet
/// Valid, DNSKEY Missing, RRSIGs Missing, No Zone Key Bit Set, NSEC Missing.
const EDE_DNSSEC_FAILURES: std::ops::RangeInclusive<u16> = 6..=12;
/// Longest EXTRA-TEXT kept for a person (it comes from the network).
const EDE_TEXT_LIMIT: usize = 120;

/// The first Extended DNS Error of the DNSSEC-failure family in a
/// response: its INFO-CODE and, if any, `: <EXTRA-TEXT>` (sanitised).
fn dnssec_extended_error(response: &DnsResponse) -> Option<(u16, String)> {
    let opt = response.edns.as_ref()?.options();
    opt.options.iter().find_map(|(_, option)| {
        let EdnsOption::Unknown(EDE_OPTION, data) = option else {
            return None;
        };
        let code = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
        if !EDE_DNSSEC_FAILURES.contains(&code) {
            return None;
        }
        let text: String = String::from_utf8_lossy(&data[2..])
            .chars()
            .filter(|c| !c.is_control())
            .take(EDE_TEXT_LIMIT)
            .collect();
        Some((
            code,
            if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            },
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    use hickory_net::proto::op::{Message, MessageType, OpCode};
    use hickory_net::proto::rr::Record;
    use hickory_net::proto::rr::rdata::{A, CNAME};

    use super::*;

    fn name(text: &str) -> Name {
        Name::from_str(text).expect("test name")
    }

    fn response(code: ResponseCode, ad: bool, answers: Vec<Record>) -> DnsResponse {
        let mut message = Message::new(7, MessageType::Response, OpCode::Query);
        message.metadata.response_code = code;
        message.metadata.authentic_data = ad;
        message.add_query(Query::query(name("mx.example."), RecordType::A));
        message.add_answers(answers);
        DnsResponse::from_message(message).expect("encodes")
    }

    fn a(owner: &str) -> Record {
        Record::from_rdata(name(owner), 300, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))))
    }

    #[test]
    fn ad_bit_means_secure() {
        let got = from_response(
            &name("mx.example."),
            RecordType::A,
            &response(ResponseCode::NoError, true, vec![a("mx.example.")]),
        );
        assert_eq!(got.dnssec(), Some(DnssecStatus::Secure));
        let got = from_response(
            &name("mx.example."),
            RecordType::A,
            &response(ResponseCode::NoError, false, vec![a("mx.example.")]),
        );
        assert_eq!(got.dnssec(), Some(DnssecStatus::Insecure));
    }

    #[test]
    fn denials_carry_the_ad_bit() {
        let got = from_response(
            &name("mx.example."),
            RecordType::A,
            &response(ResponseCode::NXDomain, true, vec![]),
        );
        assert_eq!(
            got,
            Lookup::NoRecords {
                nxdomain: true,
                dnssec: DnssecStatus::Secure
            }
        );
        let got = from_response(
            &name("mx.example."),
            RecordType::A,
            &response(ResponseCode::NoError, false, vec![]),
        );
        assert_eq!(
            got,
            Lookup::NoRecords {
                nxdomain: false,
                dnssec: DnssecStatus::Insecure
            }
        );
    }

    // RFC 4035 §5.5: a validating resolver answers SERVFAIL for bogus data.
    #[test]
    fn servfail_is_a_failure_that_may_be_bogus() {
        let got = from_response(
            &name("mx.example."),
            RecordType::A,
            &response(ResponseCode::ServFail, false, vec![]),
        );
        assert!(matches!(got, Lookup::Failed { ref reason } if reason.contains("bogus")));
    }

    // RFC 8914 §4.7: "DNSSEC Bogus" turns a SERVFAIL into a bogus answer.
    #[test]
    fn servfail_with_a_dnssec_extended_error_is_bogus() {
        use hickory_net::proto::op::Edns;

        for (code, bogus) in [(6u16, true), (7, true), (12, true), (22, false), (5, false)] {
            let mut message = Message::new(7, MessageType::Response, OpCode::Query);
            message.metadata.response_code = ResponseCode::ServFail;
            message.add_query(Query::query(name("mx.example."), RecordType::A));
            let mut edns = Edns::new();
            let mut data = code.to_be_bytes().to_vec();
            data.extend_from_slice(b"signature failed\x07");
            edns.options_mut()
                .insert(EdnsOption::Unknown(EDE_OPTION, data));
            message.edns = Some(edns);
            let response = DnsResponse::from_message(message).expect("encodes");
            let got = from_response(&name("mx.example."), RecordType::A, &response);
            match got {
                Lookup::Bogus { reason } if bogus => {
                    assert!(
                        reason.contains(&format!("Error {code}: signature failed")),
                        "{reason}"
                    );
                    assert!(!reason.contains('\x07'));
                }
                Lookup::Failed { .. } if !bogus => {}
                other => panic!("EDE {code}: {other:?}"),
            }
        }
    }

    #[test]
    fn cname_chain_gives_the_canonical_name() {
        let answers = vec![
            Record::from_rdata(
                name("mx.example."),
                300,
                RData::CNAME(CNAME(name("real.example.net."))),
            ),
            a("real.example.net."),
        ];
        let got = from_response(
            &name("mx.example."),
            RecordType::A,
            &response(ResponseCode::NoError, true, answers),
        );
        assert!(
            matches!(got, Lookup::Found(Answer { canonical_name: Some(ref c), dnssec: DnssecStatus::Secure, .. }) if c == "real.example.net")
        );
    }
}
