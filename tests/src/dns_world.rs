//! A private, DNSSEC-signed DNS for tests: its own root, TLDs and domains,
//! served on a fresh loopback address, plus (for trust-AD mode) Debian's
//! unbound validating against that root.
//!
//! Why: DANE (RFC 7672) and the check's verdicts depend on DNSSEC states
//! that the public DNS cannot be made to show on demand: secure, insecure
//! (no DS at a delegation, RFC 4035 §4.3 / §5.2), bogus (signatures that do
//! not verify), and secure denials by NSEC (RFC 4035 §3.1.3). This module
//! builds all of them at test time; nothing is a checked-in blob.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mailtls_e2e::dns_world::{DnsWorld, Signing};
//! let mut world = DnsWorld::new();
//! world
//!     .zone("dane-ok.example.", Signing::Signed)
//!     .mx(10, "mx1.dane-ok.example.")
//!     .a("mx1.dane-ok.example.", "127.1.2.3".parse()?)
//!     .tlsa("_25._tcp.mx1.dane-ok.example.", 3, 1, 1, &[0xab; 32]);
//! let running = world.start().await?;
//! let resolver = running.addr(); // for --resolver, with --trust-anchor running.trust_anchor_path()
//! let unbound = running.start_unbound().await?; // for --dns-mode trust-ad --resolver unbound.addr()
//! # Ok(()) }
//! ```
//!
//! How it is served: one hickory-server holds every zone, each signed at
//! start with its own ECDSA P-256 key (one combined signing key per zone,
//! flags 257) and NSEC chains (hickory-server's `secure_zone_mut`). A parent
//! zone carries the NS, glue and (for signed children) the DS of each child.
//! Because one server holds parent and child, a small request handler sends
//! DS questions for a child apex to the parent's data (RFC 4035 §3.1.4.1);
//! everything else goes to the most specific zone.
//!
//! A zone's parent is the closest enclosing zone declared; a domain with no
//! declared parent but the root gets its TLD created automatically (signed),
//! so `dane-ok.example.` alone gives root → `example.` → `dane-ok.example.`.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::dnssec::crypto::EcdsaSigningKey;
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS, RRSIG};
use hickory_proto::dnssec::{Algorithm, DigestType, DnssecSigner, SigningKey};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TLSA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RrKey};
use hickory_server::Server;
use hickory_server::dnssec::NxProofKind;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

/// Record types, for [`Zone::tamper`].
pub use hickory_proto::rr::RecordType;

/// TTL of every record in the world.
const TTL: u32 = 300;
/// How long signatures stay valid.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The signing algorithm (RFC 8624 §3.1: MUST implement, fast).
const ALGORITHM: Algorithm = Algorithm::ECDSAP256SHA256;

/// How a zone is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// Signed, with its DS in the parent: secure (if the parent is).
    Signed,
    /// Not signed, and no DS in the parent: provably insecure.
    Unsigned,
    /// Signed, but the DS in the parent is for a different key, so no
    /// signature in the zone chains to the anchor: bogus.
    Bogus,
}

/// A failure to build or start the world, for a person.
#[derive(Debug)]
pub struct WorldError(String);

impl fmt::Display for WorldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WorldError {}

impl WorldError {
    fn new(text: impl Into<String>) -> WorldError {
        WorldError(text.into())
    }
}

fn fail(context: &str) -> impl FnOnce(String) -> WorldError + '_ {
    move |e| WorldError(format!("{context}: {e}"))
}

/// The zones of a world, before it is started.
pub struct DnsWorld {
    zones: Vec<Zone>,
}

impl Default for DnsWorld {
    fn default() -> Self {
        DnsWorld::new()
    }
}

/// One zone being described: records are added with the builder methods.
/// Names are absolute (a missing final dot is added). Mistakes (a bad
/// name, a record outside the zone) are reported by [`DnsWorld::start`].
pub struct Zone {
    apex: Name,
    signing: Signing,
    records: Vec<Record>,
    tampered: Vec<(Name, RecordType)>,
    errors: Vec<String>,
}

impl DnsWorld {
    /// A world with only its private root `.` (signed).
    pub fn new() -> DnsWorld {
        DnsWorld {
            zones: vec![Zone::new(Name::root(), Signing::Signed)],
        }
    }

    /// The zone at `apex`, created if needed, with its signing set to
    /// `signing`. `"."` is the root.
    pub fn zone(&mut self, apex: &str, signing: Signing) -> &mut Zone {
        let name = match parse_name(apex) {
            Ok(name) => name,
            Err(error) => {
                // Record the mistake on the root so that start() reports it.
                let root = &mut self.zones[0];
                root.errors.push(error);
                return root;
            }
        };
        let index = match self.zones.iter().position(|z| z.apex == name) {
            Some(index) => index,
            None => {
                self.zones.push(Zone::new(name, signing));
                self.zones.len() - 1
            }
        };
        let zone = &mut self.zones[index];
        zone.signing = signing;
        zone
    }

    /// Signs every zone and serves them all, over UDP and TCP, on a fresh
    /// 127.x.y.z address (port 53 when allowed, else a free port).
    pub async fn start(mut self) -> Result<RunningWorld, WorldError> {
        let errors: Vec<String> = self
            .zones
            .iter()
            .flat_map(|z| z.errors.iter().cloned())
            .collect();
        if !errors.is_empty() {
            return Err(WorldError(format!(
                "bad world description: {}",
                errors.join("; ")
            )));
        }
        self.add_missing_tlds();
        // The root first (index 0: its key is the trust anchor), parents
        // before children.
        self.zones.sort_by_key(|z| z.apex.num_labels());
        let parents: Vec<Option<usize>> =
            (0..self.zones.len()).map(|i| self.parent_of(i)).collect();

        let (udp, tcp, addr) = bind_fresh_loopback().await?;
        let mut keys: Vec<Option<ZoneKeys>> = self
            .zones
            .iter()
            .map(ZoneKeys::for_zone)
            .collect::<Result<_, _>>()?;
        let mut signing_keys: Vec<Option<EcdsaSigningKey>> = keys
            .iter_mut()
            .map(|k| k.as_mut().and_then(|k| k.key.take()))
            .collect();

        let mut handlers: Vec<Arc<dyn ZoneHandler>> = Vec::with_capacity(self.zones.len());
        for (index, zone) in self.zones.iter().enumerate() {
            let children: Vec<(&Zone, &Option<ZoneKeys>)> = (0..self.zones.len())
                .filter(|&c| parents[c] == Some(index))
                .map(|c| (&self.zones[c], &keys[c]))
                .collect();
            let signer = match (signing_keys[index].take(), &keys[index]) {
                (Some(key), Some(keys)) => Some(keys.signer(key, &zone.apex)),
                _ => None,
            };
            handlers.push(Arc::new(zone.build(addr.ip(), &children, signer)?));
        }

        let mut catalog = Catalog::new();
        let mut parent_side = HashMap::new();
        for (index, zone) in self.zones.iter().enumerate() {
            catalog.upsert(LowerName::new(&zone.apex), vec![handlers[index].clone()]);
            if let Some(parent) = parents[index] {
                let mut side = Catalog::new();
                side.upsert(
                    LowerName::new(&self.zones[parent].apex),
                    vec![handlers[parent].clone()],
                );
                parent_side.insert(LowerName::new(&zone.apex), side);
            }
        }

        let mut server = Server::new(WorldHandler {
            catalog,
            parent_side,
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);

        let root_key = keys[0]
            .as_ref()
            .ok_or_else(|| WorldError::new("the root must be signed"))?
            .dnskey
            .clone();
        let scratch = tempfile::Builder::new()
            .prefix("mailtls-dns-world-")
            .tempdir()
            .map_err(|e| WorldError(format!("cannot create a temporary directory: {e}")))?;
        let running = RunningWorld {
            addr,
            root_key,
            zone_apexes: self.zones.iter().map(|z| z.apex.clone()).collect(),
            scratch,
            _server: server,
        };
        running.write_trust_anchor(&running.trust_anchor_path())?;
        running.write_trust_anchor_ds(&running.trust_anchor_ds_path())?;
        Ok(running)
    }

    /// Creates the TLD of every domain whose only declared ancestor is the root.
    fn add_missing_tlds(&mut self) {
        let mut missing = Vec::new();
        for zone in &self.zones {
            if zone.apex.num_labels() < 2 {
                continue;
            }
            let has_parent = self
                .zones
                .iter()
                .any(|p| p.apex != zone.apex && !p.apex.is_root() && p.apex.zone_of(&zone.apex));
            let mut tld = zone.apex.trim_to(1);
            tld.set_fqdn(true);
            if !has_parent && !missing.contains(&tld) {
                missing.push(tld);
            }
        }
        self.zones.extend(
            missing
                .into_iter()
                .map(|tld| Zone::new(tld, Signing::Signed)),
        );
    }

    /// The closest declared zone strictly above zone `index`.
    fn parent_of(&self, index: usize) -> Option<usize> {
        let apex = &self.zones[index].apex;
        (0..self.zones.len())
            .filter(|&p| {
                p != index && self.zones[p].apex.zone_of(apex) && self.zones[p].apex != *apex
            })
            .max_by_key(|&p| self.zones[p].apex.num_labels())
    }
}

impl Zone {
    fn new(apex: Name, signing: Signing) -> Zone {
        Zone {
            apex,
            signing,
            records: Vec::new(),
            tampered: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn add(&mut self, owner: &str, rdata: impl FnOnce() -> Result<RData, String>) -> &mut Zone {
        match parse_name(owner).and_then(|name| Ok((name, rdata()?))) {
            Ok((name, rdata)) => self.records.push(Record::from_rdata(name, TTL, rdata)),
            Err(error) => self.errors.push(format!("{owner}: {error}")),
        }
        self
    }

    /// An MX record at the zone apex (RFC 5321 §5.1).
    pub fn mx(&mut self, preference: u16, exchange: &str) -> &mut Zone {
        let apex = self.apex.to_ascii();
        self.mx_at(&apex, preference, exchange)
    }

    /// An MX record at `owner`.
    pub fn mx_at(&mut self, owner: &str, preference: u16, exchange: &str) -> &mut Zone {
        self.add(owner, || {
            Ok(RData::MX(MX::new(preference, parse_name(exchange)?)))
        })
    }

    /// The null MX `0 .` at the zone apex (RFC 7505): no mail accepted.
    pub fn null_mx(&mut self) -> &mut Zone {
        let apex = self.apex.to_ascii();
        self.add(&apex, || Ok(RData::MX(MX::new(0, Name::root()))))
    }

    /// An A record.
    pub fn a(&mut self, owner: &str, address: Ipv4Addr) -> &mut Zone {
        self.add(owner, || Ok(RData::A(A(address))))
    }

    /// An AAAA record.
    pub fn aaaa(&mut self, owner: &str, address: Ipv6Addr) -> &mut Zone {
        self.add(owner, || Ok(RData::AAAA(AAAA(address))))
    }

    /// An A or AAAA record, by the address's family.
    pub fn address(&mut self, owner: &str, address: IpAddr) -> &mut Zone {
        match address {
            IpAddr::V4(v4) => self.a(owner, v4),
            IpAddr::V6(v6) => self.aaaa(owner, v6),
        }
    }

    /// A CNAME record from `owner` to `target` (any zone of the world).
    pub fn cname(&mut self, owner: &str, target: &str) -> &mut Zone {
        self.add(owner, || Ok(RData::CNAME(CNAME(parse_name(target)?))))
    }

    /// A TLSA record (RFC 6698 §2.1), e.g. at `_25._tcp.mx.example.`.
    pub fn tlsa(
        &mut self,
        owner: &str,
        usage: u8,
        selector: u8,
        matching: u8,
        data: &[u8],
    ) -> &mut Zone {
        let data = data.to_vec();
        self.add(owner, || {
            Ok(RData::TLSA(TLSA::new(
                usage.into(),
                selector.into(),
                matching.into(),
                data,
            )))
        })
    }

    /// A TXT record with one string.
    pub fn txt(&mut self, owner: &str, text: &str) -> &mut Zone {
        let text = text.to_owned();
        self.add(owner, || Ok(RData::TXT(TXT::new(vec![text]))))
    }

    /// Corrupts the signatures over the `rtype` RRset at `owner` after the
    /// zone is signed, so that this one answer is bogus while the rest of a
    /// signed zone stays secure.
    pub fn tamper(&mut self, owner: &str, rtype: RecordType) -> &mut Zone {
        match parse_name(owner) {
            Ok(name) => self.tampered.push((name, rtype)),
            Err(error) => self.errors.push(format!("{owner}: {error}")),
        }
        self
    }

    /// The zone's data: SOA, NS and its address, each child's delegation
    /// (NS, glue, DS), then the records added by the test; signed unless
    /// `Unsigned`.
    fn build(
        &self,
        server: IpAddr,
        children: &[(&Zone, &Option<ZoneKeys>)],
        signer: Option<DnssecSigner>,
    ) -> Result<InMemoryZoneHandler, WorldError> {
        let context = format!("zone {}", self.apex);
        let proof = signer.as_ref().map(|_| NxProofKind::Nsec);
        let mut handler = InMemoryZoneHandler::empty(
            self.apex.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            proof,
        );
        let ns = name_under("ns", &self.apex).map_err(fail(&context))?;
        let hostmaster = name_under("hostmaster", &self.apex).map_err(fail(&context))?;
        let serial = 1;
        let mut records = vec![
            Record::from_rdata(
                self.apex.clone(),
                TTL,
                RData::SOA(SOA::new(
                    ns.clone(),
                    hostmaster,
                    serial,
                    3600,
                    600,
                    86400,
                    TTL,
                )),
            ),
            Record::from_rdata(self.apex.clone(), TTL, RData::NS(NS(ns.clone()))),
            Record::from_rdata(ns, TTL, address_rdata(server)),
        ];
        for (child, child_keys) in children {
            let child_ns = name_under("ns", &child.apex).map_err(fail(&context))?;
            records.push(Record::from_rdata(
                child.apex.clone(),
                TTL,
                RData::NS(NS(child_ns.clone())),
            ));
            records.push(Record::from_rdata(child_ns, TTL, address_rdata(server)));
            if let Some(child_keys) = child_keys {
                let ds = child_keys.ds_for_parent(&child.apex)?;
                records.push(Record::from_rdata(
                    child.apex.clone(),
                    TTL,
                    RData::DNSSEC(DNSSECRData::DS(ds)),
                ));
            }
        }
        for record in &self.records {
            if !self.apex.zone_of(&record.name) {
                return Err(WorldError(format!(
                    "{context}: {} is outside the zone",
                    record.name
                )));
            }
            if let Some((child, _)) = children.iter().find(|(c, _)| c.apex.zone_of(&record.name)) {
                return Err(WorldError(format!(
                    "{context}: {} belongs to child zone {}",
                    record.name, child.apex
                )));
            }
            records.push(record.clone());
        }
        for record in records {
            if !handler.upsert_mut(record.clone(), serial) {
                return Err(WorldError(format!(
                    "{context}: cannot add {} {}",
                    record.name,
                    record.record_type()
                )));
            }
        }
        if let Some(signer) = signer {
            handler
                .add_zone_signing_key_mut(signer)
                .map_err(|e| WorldError(format!("{context}: {e}")))?;
            handler
                .secure_zone_mut()
                .map_err(|e| WorldError(format!("{context}: cannot sign: {e}")))?;
        }
        for (owner, rtype) in &self.tampered {
            let key = RrKey::new(LowerName::new(owner), *rtype);
            let Some(rrset) = handler.records_get_mut().get_mut(&key) else {
                return Err(WorldError(format!(
                    "{context}: nothing to tamper with at {owner} {rtype}"
                )));
            };
            let rrset = Arc::make_mut(rrset);
            let rrsigs: Vec<Record> = rrset.rrsigs().to_vec();
            if rrsigs.is_empty() {
                return Err(WorldError(format!(
                    "{context}: {owner} {rtype} is not signed, cannot tamper"
                )));
            }
            rrset.clear_rrsigs();
            for rrsig in rrsigs {
                rrset.insert_rrsig(corrupt(rrsig));
            }
        }
        Ok(handler)
    }
}

/// Flips bits in an RRSIG's signature: still well-formed, never valid.
fn corrupt(mut record: Record) -> Record {
    if let RData::DNSSEC(DNSSECRData::RRSIG(rrsig)) = &record.data {
        let mut signature = rrsig.sig().to_vec();
        for byte in signature.iter_mut().take(8) {
            *byte ^= 0x5a;
        }
        record.data = RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(
            rrsig.input().clone(),
            signature,
        )));
    }
    record
}

fn address_rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

fn parse_name(text: &str) -> Result<Name, String> {
    let mut name = Name::from_str(text).map_err(|e| format!("invalid name {text:?}: {e}"))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

fn name_under(label: &str, apex: &Name) -> Result<Name, String> {
    apex.prepend_label(label).map_err(|e| e.to_string())
}

/// A zone's signing key and, for a bogus zone, the other key whose DS the
/// parent publishes.
struct ZoneKeys {
    /// Taken out when the zone is signed.
    key: Option<EcdsaSigningKey>,
    dnskey: DNSKEY,
    decoy: Option<DNSKEY>,
}

impl ZoneKeys {
    fn for_zone(zone: &Zone) -> Result<Option<ZoneKeys>, WorldError> {
        let (key, dnskey) = match zone.signing {
            Signing::Unsigned => return Ok(None),
            Signing::Signed | Signing::Bogus => new_key()?,
        };
        let decoy = match zone.signing {
            Signing::Bogus => Some(new_key()?.1),
            _ => None,
        };
        Ok(Some(ZoneKeys {
            key: Some(key),
            dnskey,
            decoy,
        }))
    }

    /// The signer for the zone at `apex` (the RRSIGs' signer name).
    fn signer(&self, key: EcdsaSigningKey, apex: &Name) -> DnssecSigner {
        DnssecSigner::new(
            self.dnskey.clone(),
            Box::new(key),
            apex.clone(),
            SIGNATURE_LIFETIME,
        )
    }

    /// The DS the parent publishes (RFC 4034 §5): for the real key, or for
    /// the decoy of a bogus zone.
    fn ds_for_parent(&self, apex: &Name) -> Result<DS, WorldError> {
        let key = self.decoy.as_ref().unwrap_or(&self.dnskey);
        DS::from_key(key.public_key(), apex, DigestType::SHA256)
            .map_err(|e| WorldError(format!("DS for {apex}: {e}")))
    }
}

fn new_key() -> Result<(EcdsaSigningKey, DNSKEY), WorldError> {
    let pkcs8 = EcdsaSigningKey::generate_pkcs8(ALGORITHM)
        .map_err(|e| WorldError(format!("key generation: {e}")))?;
    let key = EcdsaSigningKey::from_pkcs8(&pkcs8, ALGORITHM)
        .map_err(|e| WorldError(format!("key: {e}")))?;
    let public = key
        .to_public_key()
        .map_err(|e| WorldError(format!("public key: {e}")))?;
    // Flags 257 (zone key + SEP): hickory-server publishes every signing key
    // with these flags, and key tags must agree.
    Ok((key, DNSKEY::from_key(&public)))
}

/// A DNSKEY line (zone-file format) for a root that is not the world's:
/// an anchor under which everything is bogus.
pub fn foreign_trust_anchor_text() -> Result<String, WorldError> {
    let (_, dnskey) = new_key()?;
    Ok(format!(". {TTL} IN DNSKEY {dnskey}\n"))
}

/// Routes DS questions for a child apex to the parent's data, and all
/// others to the most specific zone.
struct WorldHandler {
    catalog: Catalog,
    parent_side: HashMap<LowerName, Catalog>,
}

#[async_trait::async_trait]
impl RequestHandler for WorldHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if let Ok(info) = request.request_info()
            && info.query.query_type() == RecordType::DS
            && let Some(parent) = self.parent_side.get(info.query.name())
        {
            return parent
                .handle_request::<R, T>(request, response_handle)
                .await;
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// A started world. Dropping it stops the server.
pub struct RunningWorld {
    addr: SocketAddr,
    root_key: DNSKEY,
    zone_apexes: Vec<Name>,
    scratch: tempfile::TempDir,
    _server: Server<WorldHandler>,
}

impl fmt::Debug for RunningWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningWorld")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningWorld {
    /// Where the world answers (UDP and TCP); the `--resolver` for validate
    /// mode.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The private root's DNSKEY, one zone-file line: a `--trust-anchor`.
    pub fn trust_anchor_text(&self) -> String {
        format!(". {TTL} IN DNSKEY {}\n", self.root_key)
    }

    /// The same anchor as a DS record (SHA-256), as unbound's `root.ds`.
    pub fn trust_anchor_ds_text(&self) -> String {
        match DS::from_key(
            self.root_key.public_key(),
            &Name::root(),
            DigestType::SHA256,
        ) {
            Ok(ds) => format!(". IN DS {ds}\n"),
            // The key was made by us, so its digest cannot fail; an empty
            // anchor file would make the test fail loudly anyway.
            Err(_) => String::new(),
        }
    }

    /// Writes [`RunningWorld::trust_anchor_text`] to `path`.
    pub fn write_trust_anchor(&self, path: &Path) -> Result<(), WorldError> {
        std::fs::write(path, self.trust_anchor_text())
            .map_err(|e| WorldError(format!("cannot write {}: {e}", path.display())))
    }

    /// Writes [`RunningWorld::trust_anchor_ds_text`] to `path`.
    pub fn write_trust_anchor_ds(&self, path: &Path) -> Result<(), WorldError> {
        std::fs::write(path, self.trust_anchor_ds_text())
            .map_err(|e| WorldError(format!("cannot write {}: {e}", path.display())))
    }

    /// A file holding the DNSKEY anchor, written at start.
    pub fn trust_anchor_path(&self) -> PathBuf {
        self.scratch.path().join("root.key")
    }

    /// A file holding the DS anchor, written at start.
    pub fn trust_anchor_ds_path(&self) -> PathBuf {
        self.scratch.path().join("root.ds")
    }

    /// A directory that lives as long as the world, for a test's files.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Starts Debian's unbound (`/usr/sbin/unbound`, or `$MAILTLS_UNBOUND`)
    /// as a validating recursive resolver for `--dns-mode trust-ad`: on its
    /// own fresh loopback address, every zone of the world stubbed to our
    /// server, our root's key as its trust anchor, in the foreground as a
    /// child process (killed when the returned value is dropped), with its
    /// configuration in a temporary directory, no chroot and no user
    /// change. Fails, never skips, when unbound is missing.
    pub async fn start_unbound(&self) -> Result<Unbound, WorldError> {
        let binary = unbound_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("mailtls-unbound-")
            .tempdir()
            .map_err(|e| WorldError(format!("cannot create a temporary directory: {e}")))?;
        let (udp, tcp, addr) = bind_fresh_loopback().await?;
        // unbound binds the address itself; ours were only to find a free one.
        drop((udp, tcp));
        self.write_trust_anchor(&dir.path().join("root.key"))?;
        let config = self.unbound_config(dir.path(), addr);
        let config_path = dir.path().join("unbound.conf");
        std::fs::write(&config_path, config)
            .map_err(|e| WorldError(format!("cannot write unbound.conf: {e}")))?;
        let log_path = dir.path().join("unbound.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| WorldError(format!("cannot create unbound.log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| WorldError(format!("unbound.log: {e}")))?;
        let child = Command::new(&binary)
            .arg("-d")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| WorldError(format!("cannot run {}: {e}", binary.display())))?;
        let mut unbound = Unbound {
            child,
            addr,
            log_path,
            _dir: dir,
        };
        unbound.wait_ready(Duration::from_secs(15)).await?;
        Ok(unbound)
    }

    fn unbound_config(&self, dir: &Path, addr: SocketAddr) -> String {
        let dir = dir.display();
        let mut config = format!(
            r#"server:
    interface: {ip}
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    log-time-ascii: yes
    verbosity: 1
    val-log-level: 2
    log-servfail: yes
    # RFC 8914: say why a SERVFAIL happened (mailtls reads DNSSEC Bogus).
    ede: yes
    num-threads: 1
    outgoing-range: 128
    num-queries-per-thread: 64
    so-reuseport: no
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "validator iterator"
    trust-anchor-file: "{dir}/root.key"
    trust-anchor-signaling: no
    root-key-sentinel: no
    qname-minimisation: no
    harden-dnssec-stripped: yes
    harden-referral-path: no
    aggressive-nsec: no
    prefetch: no
    prefetch-key: no
    target-fetch-policy: "0 0 0 0 0"
    val-permissive-mode: no
"#,
            ip = addr.ip(),
            port = addr.port(),
        );
        // Every zone is a stub on our server, so unbound never needs to
        // resolve a name server's address (which could not carry a port).
        for apex in &self.zone_apexes {
            config.push_str(&format!(
                "stub-zone:\n    name: \"{apex}\"\n    stub-addr: {ip}@{port}\n",
                ip = self.addr.ip(),
                port = self.addr.port()
            ));
        }
        config
    }
}

fn unbound_binary() -> Result<PathBuf, WorldError> {
    if let Some(path) = std::env::var_os("MAILTLS_UNBOUND") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates = vec![PathBuf::from("/usr/sbin/unbound")];
    if let Some(paths) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&paths).map(|dir| dir.join("unbound")));
    }
    candidates.into_iter().find(|path| path.is_file()).ok_or_else(|| {
        WorldError::new(
            "unbound is not installed (Debian: apt-get install unbound; or set MAILTLS_UNBOUND): \
             the trust-ad tests need it as their validating resolver",
        )
    })
}

/// A running unbound; killed on drop.
pub struct Unbound {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for Unbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unbound")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Unbound {
    /// Where unbound answers: the `--resolver` for trust-ad mode.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What unbound logged so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until unbound answers a query for the root's SOA.
    async fn wait_ready(&mut self, limit: Duration) -> Result<(), WorldError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut query = Message::query();
        query.add_query(Query::query(Name::root(), RecordType::SOA));
        query.metadata.recursion_desired = true;
        let bytes = query
            .to_vec()
            .map_err(|e| WorldError(format!("encoding a query: {e}")))?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(WorldError(format!(
                    "unbound exited ({status}) at start:\n{}",
                    self.log()
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(WorldError(format!(
                    "unbound did not answer within {limit:?}:\n{}",
                    self.log()
                )));
            }
            if probe(self.addr, &bytes).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn probe(addr: SocketAddr, query: &[u8]) -> bool {
    let Ok(socket) = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
    else {
        return false;
    };
    if socket.send_to(query, addr).await.is_err() {
        return false;
    }
    let mut buffer = [0u8; 4096];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buffer)).await,
        Ok(Ok(_))
    )
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Binds UDP and TCP on the same random 127.x.y.z, port 53 if we may (tests
/// run as root in CI), else a free port. Retries on collisions: tests run in
/// parallel threads and processes.
async fn bind_fresh_loopback() -> Result<(UdpSocket, TcpListener, SocketAddr), WorldError> {
    let random = RandomState::new();
    let mut last_error = String::new();
    for attempt in 0u32..64 {
        let bits = random.hash_one((attempt, std::process::id(), std::time::SystemTime::now()));
        let [a, b, c, ..] = bits.to_le_bytes();
        // Skip 127.0.0.0/16 (127.0.0.1 and friends are taken by system services).
        let ip = IpAddr::V4(Ipv4Addr::new(127, a.max(1), b, c.clamp(1, 254)));
        for port in [53, 0] {
            let udp = match UdpSocket::bind(SocketAddr::new(ip, port)).await {
                Ok(udp) => udp,
                Err(e) if port == 53 && e.kind() == std::io::ErrorKind::PermissionDenied => {
                    continue;
                }
                Err(e) => {
                    last_error = format!("{ip}:{port}: {e}");
                    break;
                }
            };
            let addr = udp
                .local_addr()
                .map_err(|e| WorldError(format!("local address: {e}")))?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok((udp, tcp, addr)),
                Err(e) => {
                    last_error = format!("{addr} (TCP): {e}");
                    break;
                }
            }
        }
    }
    Err(WorldError(format!(
        "no free loopback address found; last error: {last_error}"
    )))
}
