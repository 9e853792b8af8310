//! One SMTP server session as a state machine without I/O (the rustls
//! shape, STYLE.md): it takes lines ([`Frame`]s) and the results of the
//! work it asked for, and returns [`Action`]s (replies to send, a TLS
//! handshake to do, a password to check, a message to queue). Every rule of
//! the dialogue lives here and is tested without a socket; the async driver
//! in `conn.rs` only moves bytes and runs the actions.
//!
//! RFC 5321 (the dialogue), RFC 3207 (STARTTLS, and §4.2: forget everything
//! after the handshake), RFC 4954 + RFC 6409 (AUTH, only over TLS), RFC 1870
//! (SIZE), RFC 2920 (PIPELINING: the session answers commands in order; the
//! driver batches the replies), RFC 3463/2034 (enhanced codes). SPEC §7:
//! only CRLF.CRLF ends DATA, and bare CR or LF is refused.
//!
//! One state machine serves two roles ([`Role`]): submission (AUTH, relay
//! for the authenticated) and the inbound MX (no AUTH, mail only for the
//! local domains and the secure domain). Both apply SPEC §4: the secure
//! alias takes mail only over TLS, and mail from a secure sender is refused
//! at RCPT (or at the end of DATA, for a `From:` at the secure domain) when
//! the TLS memory shows a recipient's provider cannot meet the sender's
//! requirement. What those rules need from the store is asked for with
//! [`Action::Lookup`] and answered with [`Session::looked_up`]; the rules
//! themselves are `mailtls_core::sending`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mailtls_core::Address;
use mailtls_core::memory::MemoryEntry;
use mailtls_core::sending::{
    EncryptedSending, InboundDecision, Precheck, SenderRequirement, inbound_recipient, precheck,
};
use mailtls_core::status::SmtpStatus;

use super::command::{Command, Mechanism, parse_command};
use super::framing::Frame;
use super::headers::from_addresses;
use super::reply::{Refusal, Reply};
use super::sasl::{Password, decode_base64, encode_base64, parse_plain};
use super::trace::{TlsInfo, Trace};

/// RFC 5321 §4.5.3.1.4: a command line, CRLF included.
pub const COMMAND_LINE_LIMIT: usize = 512;
/// RFC 5321 §4.5.3.1.6: a text line in DATA, CRLF included.
pub const TEXT_LINE_LIMIT: usize = 1000;
/// RFC 4954 §4: an AUTH command or response line may be 12288 octets.
pub const AUTH_LINE_LIMIT: usize = 12_288;

/// The session's fixed settings, shared by all sessions of a listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name in the greeting, EHLO and trace header.
    pub hostname: String,
    /// Largest message (RFC 1870 SIZE).
    pub max_message_size: usize,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Client errors before `421` and close.
    pub max_errors: usize,
    /// Failed AUTH attempts before `421` and close.
    pub max_auth_failures: usize,
    /// Pause before answering a failed AUTH (slows password guessing).
    pub auth_failure_delay: Duration,
    /// Submission or inbound MX.
    pub role: Role,
    /// The domains whose users' mail is delivered here (lower-case A-labels).
    pub local_domains: Vec<String>,
    /// The secure domain of SPEC §4 (lower-case A-label), if configured.
    pub secure_domain: Option<String>,
}

/// Which listener a session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// 587/465: AUTH over TLS; relaying for authenticated users and trusted
    /// networks (RFC 6409).
    Submission,
    /// 25: the inbound MX; no AUTH, no relaying: mail for the local domains
    /// and the secure domain only (RFC 5321 §2.3.5, SPEC §4).
    Inbound,
}

/// What the session needs from the store before it can answer (see
/// [`Action::Lookup`]). Empty fields are not wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupRequest {
    /// The owner of the secure alias with this local part.
    pub alias_local: Option<String>,
    /// This user's Encrypted Sending setting (the authenticated user).
    pub user: Option<String>,
    /// Whether this local account exists.
    pub local_user: Option<String>,
    /// The TLS memory's domain entries for these recipient domains.
    pub memory_domains: Vec<String>,
}

/// The owner of a secure alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasOwner {
    /// The owner's account address.
    pub address: String,
    /// The owner's setting (the alias exists only while it is not off).
    pub setting: EncryptedSending,
}

/// The store's answers to a [`LookupRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupFacts {
    /// The alias's owner, if the alias exists.
    pub alias_owner: Option<AliasOwner>,
    /// The user's setting (`None`: no such user).
    pub user_setting: Option<EncryptedSending>,
    /// Whether the local account exists.
    pub local_user_exists: bool,
    /// Domain entries of the TLS memory, per requested domain.
    pub memory: Vec<(String, Option<MemoryEntry>)>,
}

/// Where a recipient's mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    /// A user of a local domain.
    Local,
    /// A secure alias; the local part.
    Secure(String),
    /// Another domain (lower-case A-label).
    Remote(String),
}

/// What the session waits for the store to answer.
#[derive(Debug)]
enum Pending {
    Mail {
        from: String,
        alias: bool,
    },
    Rcpt {
        to: String,
        destination: Destination,
    },
    EndOfData {
        body: Vec<u8>,
        from_alias: String,
    },
}

/// Who is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address.
    pub ip: IpAddr,
    /// Whether it is in `relay.trusted_networks` (may relay without AUTH).
    pub trusted: bool,
}

/// What the session asks its driver to do, in order.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Send this reply (replies may be batched until input runs dry).
    Reply(Reply),
    /// Send the replies so far, then wait this long.
    Pause(Duration),
    /// Send the replies so far, discard every byte already received
    /// (CVE-2011-0411), do the TLS handshake, then call
    /// [`Session::tls_established`].
    StartTls,
    /// Ask the store, then call [`Session::looked_up`].
    Lookup(Box<LookupRequest>),
    /// Check a password, then call [`Session::auth_checked`].
    VerifyPassword {
        /// The user name (the address).
        user: String,
        /// The password.
        password: Password,
    },
    /// Spool and queue the message, then call [`Session::queued`].
    Enqueue(Box<AcceptedMessage>),
    /// Send the replies so far and close the connection.
    Close,
}

/// A message the client finished sending, ready to be spooled.
#[derive(Debug, PartialEq, Eq)]
pub struct AcceptedMessage {
    /// Envelope sender, `""` for the null reverse-path.
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// The message as received: CRLF lines, dot-unstuffed.
    pub body: Vec<u8>,
    /// For the `Received:` header.
    pub trace: Trace,
    /// What the sender's Encrypted Sending requires of every recipient's
    /// provider (SPEC §4).
    pub sender_requirement: Option<SenderRequirement>,
}

/// Where the dialogue is.
#[derive(Debug)]
enum State {
    /// Waiting for a command.
    Command,
    /// Waiting for the `334` response of AUTH PLAIN.
    AuthPlain,
    /// Waiting for the AUTH LOGIN user name.
    AuthLoginUser,
    /// Waiting for the AUTH LOGIN password.
    AuthLoginPassword { user: String },
    /// Reading the message.
    Data(DataState),
    /// Waiting for the driver ([`Action::StartTls`], a password check, the
    /// queue).
    Waiting,
    /// Closed; nothing more is read.
    Closed,
}

#[derive(Debug)]
struct DataState {
    body: Vec<u8>,
    /// The previous line ended with CRLF (the DATA command did).
    prev_crlf: bool,
    /// The first reason to refuse the message; reading goes on to the end.
    refusal: Option<Refusal>,
}

#[derive(Debug)]
struct Envelope {
    sender: String,
    recipients: Vec<String>,
    /// SPEC §4: what the sender requires (from MAIL FROM or the login).
    requirement: Option<SenderRequirement>,
    /// The envelope sender is the secure alias (checked at MAIL).
    from_alias: bool,
}

/// One SMTP server session.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    client: Client,
    state: State,
    tls: Option<TlsInfo>,
    /// EHLO/HELO name, and whether it was EHLO.
    helo: Option<(String, bool)>,
    auth_user: Option<String>,
    /// The user an AUTH in progress is for.
    pending_user: Option<String>,
    envelope: Option<Envelope>,
    /// The command or message waiting for [`Action::Lookup`].
    pending: Option<Pending>,
    errors: usize,
    auth_failures: usize,
}

impl Session {
    /// A new session; `tls` is set for implicit TLS (RFC 8314), where the
    /// handshake came first.
    pub fn new(config: Arc<SessionConfig>, client: Client, tls: Option<TlsInfo>) -> Session {
        Session {
            config,
            client,
            state: State::Command,
            tls,
            helo: None,
            auth_user: None,
            pending_user: None,
            envelope: None,
            pending: None,
            errors: 0,
            auth_failures: 0,
        }
    }

    /// The `220` greeting (RFC 5321 §4.3.1).
    pub fn greeting(&self) -> Reply {
        Reply::plain(220, vec![format!("{} ESMTP mailtls", self.config.hostname)])
    }

    /// The longest line (CRLF included) to frame now. Command lines are
    /// framed up to the AUTH limit, and all but AUTH are then held to
    /// [`COMMAND_LINE_LIMIT`] by the session.
    pub fn line_limit(&self) -> usize {
        match self.state {
            State::Data(_) => TEXT_LINE_LIMIT,
            _ => AUTH_LINE_LIMIT,
        }
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether the session wants more input now (not waiting for the driver
    /// and not closed).
    pub fn wants_input(&self) -> bool {
        !matches!(self.state, State::Waiting | State::Closed)
    }

    /// The authenticated user, if any.
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// Handles one line from the client.
    pub fn on_frame(&mut self, frame: Frame<'_>, out: &mut Vec<Action>) {
        match std::mem::replace(&mut self.state, State::Waiting) {
            State::Data(data) => self.on_data_line(data, frame, out),
            State::Command => {
                self.state = State::Command;
                match frame {
                    Frame::TooLong { .. } => self.refuse(Refusal::LineTooLong, out),
                    Frame::Line { crlf: false, .. } | Frame::Line { bare_cr: true, .. } => {
                        self.refuse(Refusal::BareLineEnding, out)
                    }
                    // RFC 4954 §4: only AUTH may exceed 512 octets.
                    Frame::Line { text, .. }
                        if text.len() + 2 > COMMAND_LINE_LIMIT
                            && !text
                                .get(..5)
                                .is_some_and(|v| v.eq_ignore_ascii_case(b"AUTH ")) =>
                    {
                        self.refuse(Refusal::LineTooLong, out)
                    }
                    Frame::Line { text, .. } => match parse_command(text) {
                        Ok(command) => self.on_command(command, out),
                        Err(refusal) => self.refuse(refusal, out),
                    },
                }
            }
            State::AuthPlain | State::AuthLoginUser | State::AuthLoginPassword { .. }
                if !matches!(
                    frame,
                    Frame::Line {
                        crlf: true,
                        bare_cr: false,
                        ..
                    }
                ) =>
            {
                self.state = State::Command;
                let refusal = match frame {
                    Frame::TooLong { .. } => Refusal::LineTooLong,
                    _ => Refusal::BareLineEnding,
                };
                self.refuse(refusal, out);
            }
            state @ (State::AuthPlain | State::AuthLoginUser | State::AuthLoginPassword { .. }) => {
                self.state = State::Command;
                if let Frame::Line { text, .. } = frame {
                    self.on_auth_response(state, text, out);
                }
            }
            // The driver feeds no lines while waiting or closed; if it did,
            // they are ignored.
            state @ (State::Waiting | State::Closed) => self.state = state,
        }
    }

    /// The TLS handshake after STARTTLS succeeded. RFC 3207 §4.2: the
    /// session starts over (no EHLO name, no AUTH, no transaction).
    pub fn tls_established(&mut self, info: TlsInfo) {
        self.tls = Some(info);
        self.helo = None;
        self.auth_user = None;
        self.pending_user = None;
        self.envelope = None;
        self.pending = None;
        self.state = State::Command;
    }

    /// The result of [`Action::VerifyPassword`]: `Err` when the store failed.
    pub fn auth_checked<E>(&mut self, result: Result<bool, E>, out: &mut Vec<Action>) {
        self.state = State::Command;
        let user = self.pending_user.take();
        match (result, user) {
            (Ok(true), Some(user)) => {
                self.auth_user = Some(user);
                out.push(Action::Reply(Reply::new(
                    SmtpStatus::new(235, 2, 7, 0),
                    "Authentication successful",
                )));
            }
            (Err(_), _) => out.push(Action::Reply(Reply::new(
                SmtpStatus::new(454, 4, 7, 0),
                "Temporary authentication failure",
            ))),
            (Ok(_), _) => {
                self.auth_failures += 1;
                out.push(Action::Pause(self.config.auth_failure_delay));
                self.refuse(Refusal::AuthFailed, out);
                if self.auth_failures >= self.config.max_auth_failures && !self.is_closed() {
                    self.close_with(Refusal::TooManyAuthFailures, out);
                }
            }
        }
    }

    /// The result of [`Action::Enqueue`]: the message id, or `Err` when it
    /// was not queued (nothing was: the driver removed the spool file).
    pub fn queued<E>(&mut self, result: Result<String, E>, out: &mut Vec<Action>) {
        self.state = State::Command;
        self.envelope = None;
        match result {
            Ok(id) => out.push(Action::Reply(Reply::new(
                SmtpStatus::new(250, 2, 0, 0),
                format!("Ok: queued as {id}"),
            ))),
            Err(_) => out.push(Action::Reply(Refusal::LocalError.reply())),
        }
    }

    /// No input within the idle timeout (RFC 5321 §4.5.3.2.7).
    pub fn timed_out(&mut self, out: &mut Vec<Action>) {
        self.close_with(Refusal::IdleTimeout, out);
    }

    /// The server is shutting down.
    pub fn shutting_down(&mut self, out: &mut Vec<Action>) {
        self.close_with(Refusal::ShuttingDown, out);
    }

    fn on_command(&mut self, command: Command, out: &mut Vec<Action>) {
        match command {
            Command::Ehlo(name) => {
                self.envelope = None;
                let mut lines = vec![
                    format!("{} Hello {name}", self.config.hostname),
                    "PIPELINING".to_owned(),
                    format!("SIZE {}", self.config.max_message_size),
                    "8BITMIME".to_owned(),
                    "ENHANCEDSTATUSCODES".to_owned(),
                ];
                // RFC 3207 §4.2: no STARTTLS after TLS; RFC 4954 §4 and
                // RFC 6409: AUTH only where the password is encrypted.
                if self.tls.is_none() {
                    lines.push("STARTTLS".to_owned());
                } else if self.config.role == Role::Submission {
                    lines.push("AUTH PLAIN LOGIN".to_owned());
                }
                self.helo = Some((name, true));
                out.push(Action::Reply(Reply::plain(250, lines)));
            }
            Command::Helo(name) => {
                self.envelope = None;
                self.helo = Some((name, false));
                out.push(Action::Reply(Reply::plain(
                    250,
                    vec![self.config.hostname.clone()],
                )));
            }
            Command::StartTls => {
                if self.tls.is_some() {
                    return self.refuse(Refusal::BadSequence("TLS already active"), out);
                }
                out.push(Action::Reply(Reply::new(
                    SmtpStatus::new(220, 2, 0, 0),
                    "Ready to start TLS",
                )));
                out.push(Action::StartTls);
                self.state = State::Waiting;
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => self.on_auth(mechanism, initial_response, out),
            Command::Mail { from, size } => {
                if self.helo.is_none() {
                    return self.refuse(Refusal::BadSequence("send EHLO first"), out);
                }
                if self.envelope.is_some() {
                    return self.refuse(Refusal::BadSequence("nested MAIL command"), out);
                }
                // RFC 1870 §6.1: a declared size over the limit is refused
                // at once with 552.
                if size.is_some_and(|s| s > self.config.max_message_size as u64) {
                    return self.refuse(Refusal::MessageTooBig, out);
                }
                self.on_mail(from, out);
            }
            Command::Rcpt { to } => self.on_rcpt(to, out),
            Command::Data => {
                if self
                    .envelope
                    .as_ref()
                    .is_none_or(|e| e.recipients.is_empty())
                {
                    return self.refuse(Refusal::BadSequence("no valid recipients"), out);
                }
                out.push(Action::Reply(Reply::plain(
                    354,
                    vec!["End data with <CR><LF>.<CR><LF>".into()],
                )));
                self.state = State::Data(DataState {
                    body: Vec::new(),
                    prev_crlf: true,
                    refusal: None,
                });
            }
            Command::Rset => {
                self.envelope = None;
                out.push(ok(SmtpStatus::new(250, 2, 0, 0)));
            }
            Command::Noop => out.push(ok(SmtpStatus::new(250, 2, 0, 0))),
            Command::Vrfy => out.push(Action::Reply(Reply::new(
                SmtpStatus::new(252, 2, 5, 0),
                "Cannot VRFY user, but will accept message and attempt delivery",
            ))),
            Command::Help => out.push(Action::Reply(Reply::new(
                SmtpStatus::new(214, 2, 0, 0),
                "mailtls submission: see RFC 5321, RFC 6409",
            ))),
            Command::Quit => {
                out.push(Action::Reply(Reply::new(
                    SmtpStatus::new(221, 2, 0, 0),
                    "Bye",
                )));
                out.push(Action::Close);
                self.state = State::Closed;
            }
        }
    }

    /// `MAIL FROM` (RFC 5321 §4.1.1.2). On submission, SPEC §4: a sender
    /// at the secure domain must be the login's own active alias, and the
    /// sender's (or the login's) Encrypted Sending sets the requirement.
    fn on_mail(&mut self, from: String, out: &mut Vec<Action>) {
        let envelope = Envelope {
            sender: from.clone(),
            recipients: Vec::new(),
            requirement: None,
            from_alias: false,
        };
        if self.config.role == Role::Inbound || from.is_empty() {
            self.envelope = Some(envelope);
            return out.push(ok(SmtpStatus::new(250, 2, 1, 0)));
        }
        let alias_local = self.secure_local_part(&from);
        if alias_local.is_none() && self.auth_user.is_none() {
            self.envelope = Some(envelope);
            return out.push(ok(SmtpStatus::new(250, 2, 1, 0)));
        }
        let alias = alias_local.is_some();
        self.lookup(
            LookupRequest {
                alias_local,
                user: self.auth_user.clone(),
                ..LookupRequest::default()
            },
            Pending::Mail { from, alias },
            out,
        );
    }

    /// `RCPT TO` (RFC 5321 §4.1.1.3): never an open relay; local users must
    /// exist; the secure alias needs TLS; a secure sender's recipients are
    /// checked against the TLS memory (SPEC §4).
    fn on_rcpt(&mut self, to: String, out: &mut Vec<Action>) {
        let Some(envelope) = &self.envelope else {
            return self.refuse(Refusal::BadSequence("need MAIL before RCPT"), out);
        };
        if self.config.role == Role::Submission && self.auth_user.is_none() && !self.client.trusted
        {
            // Never an open relay (SPEC §5); submission is for logged-in users.
            return self.refuse(Refusal::RelayDenied, out);
        }
        if envelope.recipients.len() >= self.config.max_recipients {
            return self.refuse(Refusal::TooManyRecipients, out);
        }
        if envelope
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&to))
        {
            return out.push(ok(SmtpStatus::new(250, 2, 1, 5)));
        }
        let requirement = envelope.requirement;
        let Some(destination) = self.destination(&to) else {
            return self.refuse(Refusal::BadAddress("invalid recipient address"), out);
        };
        let request = match &destination {
            Destination::Remote(_) if self.config.role == Role::Inbound => {
                return self.refuse(Refusal::RelayDenied, out);
            }
            Destination::Remote(_) if requirement.is_none() => {
                return self.accept_recipient(to, out);
            }
            Destination::Remote(domain) => LookupRequest {
                memory_domains: vec![domain.clone()],
                ..LookupRequest::default()
            },
            Destination::Local => LookupRequest {
                local_user: Some(to.clone()),
                ..LookupRequest::default()
            },
            Destination::Secure(local) => LookupRequest {
                alias_local: Some(local.clone()),
                ..LookupRequest::default()
            },
        };
        self.lookup(request, Pending::Rcpt { to, destination }, out);
    }

    fn accept_recipient(&mut self, to: String, out: &mut Vec<Action>) {
        if let Some(envelope) = &mut self.envelope {
            envelope.recipients.push(to);
        }
        out.push(ok(SmtpStatus::new(250, 2, 1, 5)));
    }

    fn lookup(&mut self, request: LookupRequest, pending: Pending, out: &mut Vec<Action>) {
        self.pending = Some(pending);
        out.push(Action::Lookup(Box::new(request)));
        self.state = State::Waiting;
    }

    /// The result of [`Action::Lookup`]: `Err` when the store failed (the
    /// client gets a temporary `451 4.3.0` and may try again).
    pub fn looked_up<E>(&mut self, result: Result<LookupFacts, E>, out: &mut Vec<Action>) {
        self.state = State::Command;
        let Some(pending) = self.pending.take() else {
            return;
        };
        let Ok(facts) = result else {
            if matches!(pending, Pending::EndOfData { .. }) {
                self.envelope = None;
            }
            return out.push(Action::Reply(Refusal::LocalError.reply()));
        };
        match pending {
            Pending::Mail { from, alias } => self.mail_looked_up(from, alias, facts, out),
            Pending::Rcpt { to, destination } => self.rcpt_looked_up(to, destination, facts, out),
            Pending::EndOfData { body, from_alias } => {
                self.data_looked_up(body, &from_alias, facts, out)
            }
        }
    }

    fn mail_looked_up(
        &mut self,
        from: String,
        alias: bool,
        facts: LookupFacts,
        out: &mut Vec<Action>,
    ) {
        let requirement = if alias {
            match self.owned_alias(facts.alias_owner.as_ref()) {
                Some(owner) => owner.setting.outbound(),
                None => return self.refuse(Refusal::NotYourAlias(from), out),
            }
        } else {
            facts.user_setting.and_then(|s| s.outbound())
        };
        self.envelope = Some(Envelope {
            sender: from,
            recipients: Vec::new(),
            requirement,
            from_alias: alias,
        });
        out.push(ok(SmtpStatus::new(250, 2, 1, 0)));
    }

    fn rcpt_looked_up(
        &mut self,
        to: String,
        destination: Destination,
        facts: LookupFacts,
        out: &mut Vec<Action>,
    ) {
        match destination {
            Destination::Local if facts.local_user_exists => self.accept_recipient(to, out),
            Destination::Local => self.refuse(Refusal::NoSuchUser(to), out),
            Destination::Secure(_) => {
                let setting = facts.alias_owner.as_ref().map(|o| &o.setting);
                let protocol = self.tls.as_ref().map(|t| t.version.as_str());
                match inbound_recipient(&to, setting, protocol) {
                    InboundDecision::Accept => self.accept_recipient(to, out),
                    InboundDecision::NoSuchUser => self.refuse(Refusal::NoSuchUser(to), out),
                    InboundDecision::EncryptionRequired(why) => {
                        self.refuse(Refusal::EncryptionNeeded(why), out)
                    }
                }
            }
            Destination::Remote(domain) => {
                let requirement = self.envelope.as_ref().and_then(|e| e.requirement);
                let entry = memory_entry(&facts, &domain);
                match requirement.map(|r| precheck(&r, entry)) {
                    Some(Precheck::Fails(why)) => self.refuse(
                        Refusal::EncryptionNeeded(format!("<{to}> not accepted: {why}")),
                        out,
                    ),
                    _ => self.accept_recipient(to, out),
                }
            }
        }
    }

    /// SPEC §4 for a `From:` at the secure domain: the alias must be the
    /// login's, and every recipient must be able to take the mail as the
    /// alias's owner requires, or nothing is sent to anyone.
    fn data_looked_up(
        &mut self,
        body: Vec<u8>,
        from_alias: &str,
        facts: LookupFacts,
        out: &mut Vec<Action>,
    ) {
        let Some(mut envelope) = self.envelope.take() else {
            return self.refuse(Refusal::LocalError, out);
        };
        let Some(owner) = self.owned_alias(facts.alias_owner.as_ref()) else {
            return self.refuse(Refusal::NotYourAlias(from_alias.to_owned()), out);
        };
        if let Some(requirement) = owner.setting.outbound() {
            let failures: Vec<String> = envelope
                .recipients
                .iter()
                .filter_map(|rcpt| {
                    let Some(Destination::Remote(domain)) = self.destination(rcpt) else {
                        return None;
                    };
                    match precheck(&requirement, memory_entry(&facts, &domain)) {
                        Precheck::Fails(why) => Some(format!("<{rcpt}>: {why}")),
                        _ => None,
                    }
                })
                .collect();
            if !failures.is_empty() {
                return self.refuse(
                    Refusal::EncryptionNeeded(format!(
                        "message not sent to anyone: {}",
                        failures.join("; ")
                    )),
                    out,
                );
            }
            envelope.requirement = Some(requirement);
        }
        self.enqueue(envelope, body, out);
    }

    /// The alias's owner, if the alias exists and the session may use it:
    /// the logged-in user must own it (a trusted network without login may
    /// send as any active alias: it is a mail system of ours).
    fn owned_alias<'a>(&self, owner: Option<&'a AliasOwner>) -> Option<&'a AliasOwner> {
        let owner = owner.filter(|o| o.setting.alias_enabled())?;
        match &self.auth_user {
            None if self.client.trusted => Some(owner),
            None => None,
            Some(user) => same_account(user, &owner.address).then_some(owner),
        }
    }

    /// The local part if `address` is at the secure domain.
    fn secure_local_part(&self, address: &str) -> Option<String> {
        match self.destination(address)? {
            Destination::Secure(local) => Some(local),
            _ => None,
        }
    }

    /// Where mail for `address` goes; `None` for an address that does not
    /// parse.
    fn destination(&self, address: &str) -> Option<Destination> {
        let parsed = Address::parse(address).ok()?;
        let domain = parsed
            .domain()
            .as_str()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if self.config.secure_domain.as_deref() == Some(domain.as_str()) {
            return Some(Destination::Secure(parsed.local_part().to_lowercase()));
        }
        if self.config.local_domains.contains(&domain) {
            return Some(Destination::Local);
        }
        Some(Destination::Remote(domain))
    }

    fn on_auth(&mut self, mechanism: Mechanism, initial: Option<String>, out: &mut Vec<Action>) {
        if self.config.role == Role::Inbound {
            return self.refuse(
                Refusal::BadSequence("no authentication on the MX port; use submission (587)"),
                out,
            );
        }
        if self.tls.is_none() {
            return self.refuse(Refusal::EncryptionRequired, out);
        }
        if self.helo.is_none() {
            return self.refuse(Refusal::BadSequence("send EHLO first"), out);
        }
        if self.auth_user.is_some() {
            return self.refuse(Refusal::BadSequence("already authenticated"), out);
        }
        if self.envelope.is_some() {
            return self.refuse(
                Refusal::BadSequence("AUTH not allowed during a mail transaction"),
                out,
            );
        }
        match (mechanism, initial) {
            (Mechanism::Plain, Some(response)) => {
                self.on_auth_response(State::AuthPlain, response.as_bytes(), out)
            }
            (Mechanism::Plain, None) => {
                out.push(Action::Reply(Reply::plain(334, vec![String::new()])));
                self.state = State::AuthPlain;
            }
            (Mechanism::Login, Some(response)) => {
                self.on_auth_response(State::AuthLoginUser, response.as_bytes(), out)
            }
            (Mechanism::Login, None) => {
                out.push(Action::Reply(Reply::plain(
                    334,
                    vec![encode_base64(b"Username:")],
                )));
                self.state = State::AuthLoginUser;
            }
        }
    }

    /// A SASL response line in `state` (the session is in `Command` now).
    fn on_auth_response(&mut self, state: State, text: &[u8], out: &mut Vec<Action>) {
        if text == b"*" {
            return self.refuse(Refusal::AuthCancelled, out);
        }
        let decoded = std::str::from_utf8(text).ok().and_then(decode_base64);
        let Some(decoded) = decoded else {
            return self.refuse(Refusal::Syntax("invalid base64"), out);
        };
        match state {
            State::AuthPlain => match parse_plain(&decoded) {
                Some((user, password)) => self.verify(user, password, out),
                None => self.auth_checked(Ok::<bool, ()>(false), out),
            },
            State::AuthLoginUser => match String::from_utf8(decoded) {
                Ok(user) if !user.is_empty() => {
                    out.push(Action::Reply(Reply::plain(
                        334,
                        vec![encode_base64(b"Password:")],
                    )));
                    self.state = State::AuthLoginPassword { user };
                }
                _ => self.auth_checked(Ok::<bool, ()>(false), out),
            },
            State::AuthLoginPassword { user } => match String::from_utf8(decoded) {
                Ok(password) if !password.is_empty() => self.verify(user, Password(password), out),
                _ => self.auth_checked(Ok::<bool, ()>(false), out),
            },
            _ => self.state = state,
        }
    }

    fn verify(&mut self, user: String, password: Password, out: &mut Vec<Action>) {
        self.pending_user = Some(user.clone());
        out.push(Action::VerifyPassword { user, password });
        self.state = State::Waiting;
    }

    /// A line of the message (RFC 5321 §4.1.1.4, §4.5.2).
    fn on_data_line(&mut self, mut data: DataState, frame: Frame<'_>, out: &mut Vec<Action>) {
        match frame {
            // SPEC §7: only <CR><LF>.<CR><LF> ends the message.
            Frame::Line {
                text: b".",
                crlf: true,
                bare_cr: false,
            } if data.prev_crlf => {
                return self.end_of_data(data, out);
            }
            Frame::TooLong { crlf } => {
                data.refusal.get_or_insert(Refusal::DataLineTooLong);
                data.body = Vec::new();
                data.prev_crlf = crlf;
            }
            Frame::Line {
                text,
                crlf,
                bare_cr,
            } => {
                data.prev_crlf = crlf;
                if !crlf || bare_cr {
                    data.refusal.get_or_insert(Refusal::BareLineEndingInData);
                }
                // RFC 5321 §4.5.2: drop the first of leading dots.
                let text = text.strip_prefix(b".").unwrap_or(text);
                if data.body.len() + text.len() + 2 > self.config.max_message_size {
                    data.refusal.get_or_insert(Refusal::MessageTooBig);
                }
                if data.refusal.is_none() {
                    data.body.extend_from_slice(text);
                    data.body.extend_from_slice(b"\r\n");
                } else {
                    // Refused: keep reading to the end, keep nothing.
                    data.body = Vec::new();
                }
            }
        }
        self.state = State::Data(data);
    }

    fn end_of_data(&mut self, data: DataState, out: &mut Vec<Action>) {
        self.state = State::Command;
        let envelope = self.envelope.take();
        if let Some(refusal) = data.refusal {
            return self.refuse(refusal, out);
        }
        let Some(envelope) = envelope else {
            // DATA is only entered with an envelope after EHLO/HELO.
            return self.refuse(Refusal::LocalError, out);
        };
        // SPEC §4, header-based: a `From:` at the secure domain other than
        // an envelope sender already checked at MAIL.
        if self.config.role == Role::Submission {
            let from_alias = from_addresses(&data.body)
                .into_iter()
                .find(|a| self.secure_local_part(a).is_some())
                .filter(|a| !(envelope.from_alias && a.eq_ignore_ascii_case(&envelope.sender)));
            if let Some(from_alias) = from_alias {
                let memory_domains = envelope
                    .recipients
                    .iter()
                    .filter_map(|r| match self.destination(r) {
                        Some(Destination::Remote(domain)) => Some(domain),
                        _ => None,
                    })
                    .collect();
                let request = LookupRequest {
                    alias_local: self.secure_local_part(&from_alias),
                    memory_domains,
                    ..LookupRequest::default()
                };
                self.envelope = Some(envelope);
                return self.lookup(
                    request,
                    Pending::EndOfData {
                        body: data.body,
                        from_alias,
                    },
                    out,
                );
            }
        }
        self.enqueue(envelope, data.body, out);
    }

    fn enqueue(&mut self, envelope: Envelope, body: Vec<u8>, out: &mut Vec<Action>) {
        let Some((helo, esmtp)) = self.helo.clone() else {
            return self.refuse(Refusal::LocalError, out);
        };
        let trace = Trace {
            helo,
            esmtp,
            client_ip: self.client.ip,
            tls: self.tls.clone(),
            auth_user: self.auth_user.clone(),
        };
        out.push(Action::Enqueue(Box::new(AcceptedMessage {
            sender: envelope.sender,
            recipients: envelope.recipients,
            body,
            trace,
            sender_requirement: envelope.requirement,
        })));
        self.state = State::Waiting;
    }

    /// Refuses; a client error counts toward the session's limit.
    fn refuse(&mut self, refusal: Refusal, out: &mut Vec<Action>) {
        let client_error = refusal.is_client_error();
        out.push(Action::Reply(refusal.reply()));
        if client_error {
            self.errors += 1;
            if self.errors >= self.config.max_errors {
                self.close_with(Refusal::TooManyErrors, out);
            }
        }
    }

    fn close_with(&mut self, refusal: Refusal, out: &mut Vec<Action>) {
        out.push(Action::Reply(Reply::new(
            refusal.status(),
            format!("{} {refusal}", self.config.hostname),
        )));
        out.push(Action::Close);
        self.state = State::Closed;
    }
}

/// The memory entry looked up for `domain`.
fn memory_entry<'a>(facts: &'a LookupFacts, domain: &str) -> Option<&'a MemoryEntry> {
    facts
        .memory
        .iter()
        .find(|(d, _)| d == domain)
        .and_then(|(_, e)| e.as_ref())
}

/// Whether two account addresses are the same account: the domain in any
/// case, the local part too (accounts are unique without case in practice,
/// and a login typed `Me@` for `me@` is the same person).
fn same_account(a: &str, b: &str) -> bool {
    match (Address::parse(a), Address::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.local_part().eq_ignore_ascii_case(b.local_part())
                && a.domain()
                    .as_str()
                    .eq_ignore_ascii_case(b.domain().as_str())
        }
        _ => false,
    }
}

fn ok(status: SmtpStatus) -> Action {
    Action::Reply(Reply::new(status, "Ok"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::framing::{LineFramer, Step};

    fn config() -> Arc<SessionConfig> {
        Arc::new(SessionConfig {
            hostname: "mx.test".into(),
            max_message_size: 100,
            max_recipients: 2,
            max_errors: 5,
            max_auth_failures: 2,
            auth_failure_delay: Duration::from_millis(1),
            role: Role::Submission,
            local_domains: vec!["example.org".into()],
            secure_domain: Some("secure.example.org".into()),
        })
    }

    fn tls() -> TlsInfo {
        TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
        }
    }

    fn session(trusted: bool, tls_on: bool) -> Session {
        let client = Client {
            ip: "192.0.2.1".parse().expect("ip"),
            trusted,
        };
        Session::new(config(), client, tls_on.then(tls))
    }

    /// Feeds raw bytes as the driver would, answering every store look-up
    /// with "nothing known" (no settings, no such user, no memory), and
    /// returns the actions.
    fn feed(session: &mut Session, input: &[u8]) -> Vec<Action> {
        let mut framer = LineFramer::default();
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            while session.wants_input() {
                match framer.next(&input[pos..], session.line_limit()) {
                    Step::Frame(frame, n) => {
                        pos += n;
                        session.on_frame(frame, &mut out);
                    }
                    Step::NeedMore(_) => break,
                }
            }
            if !matches!(out.last(), Some(Action::Lookup(_))) {
                return out;
            }
            out.pop();
            session.looked_up(Ok::<LookupFacts, ()>(LookupFacts::default()), &mut out);
        }
    }

    /// Feeds raw bytes as the driver would, and returns the actions; a
    /// store look-up is left for the test to answer.
    fn feed_raw(session: &mut Session, input: &[u8]) -> Vec<Action> {
        let mut framer = LineFramer::default();
        let mut out = Vec::new();
        let mut pos = 0;
        while session.wants_input() {
            match framer.next(&input[pos..], session.line_limit()) {
                Step::Frame(frame, n) => {
                    pos += n;
                    session.on_frame(frame, &mut out);
                }
                Step::NeedMore(_) => break,
            }
        }
        out
    }

    /// The reply codes and first lines, as text.
    fn replies(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply(r) => Some(
                    String::from_utf8_lossy(&r.to_wire())
                        .lines()
                        .last()
                        .unwrap_or("")
                        .to_owned(),
                ),
                _ => None,
            })
            .collect()
    }

    fn codes(actions: &[Action]) -> Vec<u16> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply(r) => Some(r.code),
                _ => None,
            })
            .collect()
    }

    fn authenticated() -> Session {
        let mut s = session(false, true);
        let out = feed(
            &mut s,
            b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHNlY3JldA==\r\n",
        );
        assert!(
            matches!(out.last(), Some(Action::VerifyPassword { user, .. }) if user == "alice@example.org")
        );
        let mut out = Vec::new();
        s.auth_checked(Ok::<bool, ()>(true), &mut out);
        assert_eq!(codes(&out), [235]);
        s
    }

    // RFC 5321 §4.1.1.1 and the extensions we offer.

    #[test]
    fn ehlo_offers_starttls_before_tls_and_auth_only_after() {
        let mut s = session(false, false);
        let text = String::from_utf8(match &feed(&mut s, b"EHLO c.test\r\n")[0] {
            Action::Reply(r) => r.to_wire(),
            other => panic!("{other:?}"),
        })
        .expect("utf8");
        assert_eq!(
            text,
            "250-mx.test Hello c.test\r\n250-PIPELINING\r\n250-SIZE 100\r\n250-8BITMIME\r\n\
             250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n"
        );
        let mut s = session(false, true);
        let out = feed(&mut s, b"EHLO c.test\r\n");
        let Action::Reply(reply) = &out[0] else {
            panic!("{out:?}")
        };
        assert!(reply.lines.contains(&"AUTH PLAIN LOGIN".to_owned()));
        assert!(!reply.lines.contains(&"STARTTLS".to_owned()));
    }

    // RFC 4954 §4, RFC 6409: AUTH only over TLS.

    #[test]
    fn auth_before_tls_is_refused_with_538() {
        let mut s = session(false, false);
        let out = feed(&mut s, b"EHLO c\r\nAUTH PLAIN AGEAYg==\r\n");
        assert_eq!(
            replies(&out)[1],
            "538 5.7.11 Encryption required for requested authentication mechanism"
        );
    }

    #[test]
    fn auth_login_dialogue() {
        let mut s = session(false, true);
        let out = feed(&mut s, b"EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n");
        assert_eq!(replies(&out)[1..], ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"]);
        assert!(
            matches!(out.last(), Some(Action::VerifyPassword { user, password })
            if user == "alice" && password.0 == "secret")
        );
    }

    #[test]
    fn failed_auth_pauses_then_535_and_the_limit_closes() {
        let mut s = session(false, true);
        feed(&mut s, b"EHLO c\r\nAUTH PLAIN AGEAYg==\r\n");
        let mut out = Vec::new();
        s.auth_checked(Ok::<bool, ()>(false), &mut out);
        assert!(matches!(out[0], Action::Pause(_)));
        assert_eq!(
            replies(&out),
            ["535 5.7.8 authentication credentials invalid"]
        );
        let mut out = feed(&mut s, b"AUTH PLAIN AGEAYg==\r\n");
        s.auth_checked(Ok::<bool, ()>(false), &mut out);
        assert_eq!(codes(&out), [535, 421]);
        assert!(s.is_closed());
    }

    #[test]
    fn auth_can_be_cancelled() {
        let mut s = session(false, true);
        let out = feed(&mut s, b"EHLO c\r\nAUTH PLAIN\r\n*\r\nNOOP\r\n");
        assert_eq!(codes(&out), [250, 334, 501, 250]);
    }

    // Never an open relay.

    #[test]
    fn relaying_needs_auth_or_a_trusted_network() {
        let mut s = session(false, true);
        let out = feed(
            &mut s,
            b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n",
        );
        assert_eq!(replies(&out)[2], "554 5.7.1 Relay access denied");
        let mut s = session(true, false);
        let out = feed(
            &mut s,
            b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n",
        );
        assert_eq!(codes(&out), [250, 250, 250]);
        let mut s = authenticated();
        let out = feed(&mut s, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n");
        assert_eq!(codes(&out), [250, 250]);
    }

    #[test]
    fn a_whole_transaction_yields_the_message_dot_unstuffed() {
        let mut s = authenticated();
        let out = feed(
            &mut s,
            b"MAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\n.\r\nNOOP\r\n",
        );
        assert_eq!(codes(&out), [250, 250, 354]);
        let Some(Action::Enqueue(message)) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!(message.body, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(message.sender, "");
        assert_eq!(message.recipients, ["b@y.test"]);
        assert_eq!(
            message.trace.auth_user.as_deref(),
            Some("alice@example.org")
        );
        assert!(!s.wants_input(), "waits for the queue before reading NOOP");
        let mut out = Vec::new();
        s.queued(Ok::<String, ()>("ID1".into()), &mut out);
        assert_eq!(replies(&out), ["250 2.0.0 Ok: queued as ID1"]);
        let mut out = Vec::new();
        s.queued(Err(()), &mut out);
        assert_eq!(
            replies(&out),
            ["451 4.3.0 local error in processing; message not queued"]
        );
    }

    // SPEC §7: SMTP smuggling.

    #[test]
    fn bare_lf_dot_bare_lf_does_not_end_data_and_bare_lf_refuses_the_message() {
        let mut s = authenticated();
        let out = feed(
            &mut s,
            b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n",
        );
        assert_eq!(
            replies(&out)[2..],
            [
                "354 End data with <CR><LF>.<CR><LF>",
                "554 5.6.0 bare CR or LF in message; lines end with CRLF"
            ]
        );
        assert!(!out.iter().any(|a| matches!(a, Action::Enqueue(_))));
        assert!(s.wants_input());
    }

    #[test]
    fn bare_cr_in_data_and_dot_after_bare_lf_do_not_end_data() {
        for body in [&b"x\r.\r\n"[..], b"x\n.\r\n", b"x\r\n.\n", b"x\r\n.\r.\r\n"] {
            let mut s = authenticated();
            let mut input = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n".to_vec();
            input.extend_from_slice(body);
            let out = feed(&mut s, &input);
            assert_eq!(codes(&out), [250, 250, 354], "{body:?} must not end DATA");
            let out = feed(&mut s, b"\r\n.\r\n");
            assert_eq!(codes(&out), [554], "{body:?}");
        }
    }

    #[test]
    fn bare_lf_in_a_command_is_refused() {
        let mut s = session(false, false);
        let out = feed(&mut s, b"EHLO c\nNOOP\r\n");
        assert_eq!(
            replies(&out)[0],
            "500 5.5.2 bare CR or LF not allowed; lines end with CRLF"
        );
        assert_eq!(codes(&out), [500, 250]);
    }

    // Limits.

    #[test]
    fn size_limits_declared_and_actual() {
        let mut s = authenticated();
        let out = feed(&mut s, b"MAIL FROM:<a@x.test> SIZE=101\r\n");
        assert_eq!(
            replies(&out),
            ["552 5.3.4 message size exceeds fixed maximum message size"]
        );
        let mut input = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n".to_vec();
        for _ in 0..20 {
            input.extend_from_slice(b"0123456789\r\n");
        }
        input.extend_from_slice(b".\r\n");
        let out = feed(&mut s, &input);
        assert_eq!(codes(&out), [250, 250, 354, 552]);
    }

    #[test]
    fn recipient_limit_is_452() {
        let mut s = authenticated();
        let out = feed(&mut s, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<1@y.test>\r\nRCPT TO:<2@y.test>\r\nRCPT TO:<3@y.test>\r\n");
        assert_eq!(replies(&out)[3], "452 4.5.3 too many recipients");
    }

    #[test]
    fn long_lines() {
        let mut s = session(false, false);
        let mut input = vec![b'N'; 600];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(
            replies(&feed(&mut s, &input)),
            ["500 5.5.6 line too long", "250 2.0.0 Ok"]
        );
        let mut s = authenticated();
        let mut input = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 1200]);
        input.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(codes(&feed(&mut s, &input)), [250, 250, 354, 500]);
    }

    /// RFC 4954 §4: an AUTH line may be longer than 512 octets.
    #[test]
    fn long_auth_lines_are_allowed_other_long_commands_are_not() {
        let password = "p".repeat(1000);
        let token = encode_base64(format!("\0alice\0{password}").as_bytes());
        let mut s = session(false, true);
        let out = feed(
            &mut s,
            format!("EHLO c\r\nAUTH PLAIN {token}\r\n").as_bytes(),
        );
        assert!(
            matches!(out.last(), Some(Action::VerifyPassword { password: p, .. }) if p.0 == password)
        );
        let mut s = session(false, true);
        let out = feed(
            &mut s,
            format!("NOOP {}\r\nNOOP {}\r\n", "x".repeat(505), "x".repeat(506)).as_bytes(),
        );
        assert_eq!(codes(&out), [250, 500]);
        let out = feed(
            &mut s,
            format!("AUTH PLAIN {}\r\n", "x".repeat(13_000)).as_bytes(),
        );
        assert_eq!(replies(&out), ["500 5.5.6 line too long"]);
    }

    #[test]
    fn too_many_errors_close_with_421() {
        let mut s = session(false, false);
        let out = feed(&mut s, b"A\r\nB\r\nC\r\nD\r\nE\r\nNOOP\r\n");
        assert_eq!(codes(&out), [500, 500, 500, 500, 500, 421]);
        assert_eq!(out.last(), Some(&Action::Close));
        assert!(s.is_closed());
    }

    // RFC 3207.

    #[test]
    fn starttls_waits_and_tls_resets_the_session() {
        let mut s = session(false, false);
        let out = feed(&mut s, b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n");
        assert_eq!(codes(&out), [250, 220], "NOOP after STARTTLS is not read");
        assert_eq!(out.last(), Some(&Action::StartTls));
        s.tls_established(tls());
        let out = feed(&mut s, b"MAIL FROM:<a@x.test>\r\n");
        assert_eq!(replies(&out), ["503 5.5.1 send EHLO first"]);
        let out = feed(&mut s, b"EHLO c\r\nSTARTTLS\r\n");
        assert_eq!(codes(&out), [250, 503]);
    }

    #[test]
    fn sequence_errors() {
        let mut s = authenticated();
        assert_eq!(
            codes(&feed(&mut s, b"RCPT TO:<b@y.test>\r\nDATA\r\n")),
            [503, 503]
        );
        assert_eq!(
            codes(&feed(
                &mut s,
                b"MAIL FROM:<a@x.test>\r\nMAIL FROM:<a@x.test>\r\nDATA\r\n"
            )),
            [250, 503, 503]
        );
        assert_eq!(
            codes(&feed(&mut s, b"RSET\r\nVRFY x\r\nHELP\r\nQUIT\r\n")),
            [250, 252, 214, 221]
        );
        assert!(s.is_closed());
    }

    /// SPEC §7: no input panics the session. Random mixtures of real
    /// commands, line endings and garbage, every action answered, until the
    /// fuzz target exists.
    #[test]
    fn random_input_never_panics() {
        const PIECES: &[&[u8]] = &[
            b"EHLO c\r\n",
            b"HELO c\r\n",
            b"MAIL FROM:<a@x.test>\r\n",
            b"MAIL FROM:<>\r\n",
            b"RCPT TO:<b@y.test>\r\n",
            b"DATA\r\n",
            b".\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b".",
            b"AUTH PLAIN\r\n",
            b"AUTH LOGIN\r\n",
            b"AGEAYg==\r\n",
            b"*\r\n",
            b"STARTTLS\r\n",
            b"RSET\r\n",
            b"NOOP\r\n",
            b"x",
            b"\0",
            b"\xff",
            b"<",
            b">",
            b"@",
            b"=",
            b" ",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let mut s = session(next() % 2 == 0, next() % 2 == 0);
            let mut framer = LineFramer::default();
            let mut input = Vec::new();
            for _ in 0..200 {
                let n = (next() % 40) as usize;
                for _ in 0..n {
                    input.extend_from_slice(PIECES[(next() as usize) % PIECES.len()]);
                }
                if next() % 10 == 0 {
                    input.extend(std::iter::repeat_n(b'y', (next() % 3000) as usize));
                }
                let mut used = 0;
                let mut out = Vec::new();
                while s.wants_input() {
                    match framer.next(&input[used..], s.line_limit()) {
                        Step::Frame(frame, n) => {
                            used += n;
                            s.on_frame(frame, &mut out);
                        }
                        Step::NeedMore(n) => {
                            used += n;
                            break;
                        }
                    }
                    while let Some(action) = out.pop() {
                        let mut more = Vec::new();
                        match action {
                            Action::VerifyPassword { .. } => {
                                s.auth_checked(Ok::<bool, ()>(next() % 2 == 0), &mut more)
                            }
                            Action::Enqueue(_) => {
                                s.queued(Ok::<String, ()>("ID".into()), &mut more)
                            }
                            Action::StartTls => s.tls_established(tls()),
                            Action::Lookup(_) => s.looked_up(
                                Ok::<LookupFacts, ()>(LookupFacts {
                                    local_user_exists: next() % 2 == 0,
                                    ..LookupFacts::default()
                                }),
                                &mut more,
                            ),
                            _ => {}
                        }
                        out.extend(more);
                    }
                }
                input.drain(..used);
                if s.is_closed() {
                    break;
                }
            }
        }
    }

    // --- SPEC §4: the inbound MX and the secure alias --------------------------

    fn mx_session(tls_on: bool) -> Session {
        let config = SessionConfig {
            role: Role::Inbound,
            ..(*config()).clone()
        };
        let client = Client {
            ip: "198.51.100.7".parse().expect("ip"),
            trusted: false,
        };
        Session::new(Arc::new(config), client, tls_on.then(tls))
    }

    fn lookup_of(actions: &[Action]) -> Option<&LookupRequest> {
        actions.iter().find_map(|a| match a {
            Action::Lookup(r) => Some(&**r),
            _ => None,
        })
    }

    fn answer(s: &mut Session, facts: LookupFacts) -> Vec<Action> {
        let mut out = Vec::new();
        s.looked_up(Ok::<LookupFacts, ()>(facts), &mut out);
        out
    }

    fn owner(setting: EncryptedSending) -> LookupFacts {
        LookupFacts {
            alias_owner: Some(AliasOwner {
                address: "me@example.org".into(),
                setting,
            }),
            ..LookupFacts::default()
        }
    }

    #[test]
    fn the_mx_offers_no_auth_and_relays_nothing() {
        let mut s = mx_session(true);
        let out = feed_raw(&mut s, b"EHLO peer.test\r\n");
        let ehlo = String::from_utf8_lossy(&match &out[0] {
            Action::Reply(r) => r.to_wire(),
            _ => Vec::new(),
        })
        .into_owned();
        assert!(!ehlo.contains("AUTH"), "{ehlo}");
        let out = feed_raw(&mut s, b"AUTH PLAIN AGEAYg==\r\n");
        assert_eq!(codes(&out), [503]);
        let out = feed_raw(
            &mut s,
            b"MAIL FROM:<x@elsewhere.test>\r\nRCPT TO:<y@other.test>\r\n",
        );
        assert_eq!(replies(&out)[1], "554 5.7.1 Relay access denied");
    }

    #[test]
    fn the_mx_takes_mail_for_existing_local_users_only() {
        let mut s = mx_session(false);
        let out = feed_raw(
            &mut s,
            b"EHLO p\r\nMAIL FROM:<x@elsewhere.test>\r\nRCPT TO:<bob@Example.ORG>\r\n",
        );
        assert_eq!(
            lookup_of(&out).and_then(|r| r.local_user.as_deref()),
            Some("bob@Example.ORG")
        );
        let out = answer(&mut s, LookupFacts::default());
        assert_eq!(codes(&out), [550]);
        assert!(replies(&out)[0].contains("5.1.1"), "{:?}", replies(&out));
        feed_raw(&mut s, b"RCPT TO:<me@example.org>\r\n");
        let out = answer(
            &mut s,
            LookupFacts {
                local_user_exists: true,
                ..LookupFacts::default()
            },
        );
        assert_eq!(codes(&out), [250]);
        let out = feed_raw(&mut s, b"DATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\n");
        let Some(Action::Enqueue(message)) = out.last() else {
            panic!("queued: {out:?}")
        };
        assert_eq!(message.recipients, ["me@example.org"]);
        assert_eq!(message.sender_requirement, None);
    }

    /// SPEC §4: RCPT to the alias without TLS gets a permanent 5.7.x that
    /// says why; other recipients of the transaction are unaffected.
    #[test]
    fn the_secure_alias_refuses_plaintext_and_accepts_tls() {
        let mut s = mx_session(false);
        let out = feed_raw(
            &mut s,
            b"EHLO p\r\nMAIL FROM:<x@elsewhere.test>\r\nRCPT TO:<Me@secure.example.org>\r\n",
        );
        assert_eq!(
            lookup_of(&out).and_then(|r| r.alias_local.as_deref()),
            Some("me")
        );
        let out = answer(&mut s, owner(EncryptedSending::On));
        assert_eq!(codes(&out), [550]);
        let text = &replies(&out)[0];
        assert!(
            text.starts_with("550 5.7.10") && text.contains("encryption required"),
            "{text}"
        );
        feed_raw(&mut s, b"RCPT TO:<me@example.org>\r\n");
        let out = answer(
            &mut s,
            LookupFacts {
                local_user_exists: true,
                ..LookupFacts::default()
            },
        );
        assert_eq!(codes(&out), [250], "the other recipient is unaffected");

        let mut s = mx_session(true);
        feed_raw(
            &mut s,
            b"EHLO p\r\nMAIL FROM:<x@elsewhere.test>\r\nRCPT TO:<me@secure.example.org>\r\n",
        );
        assert_eq!(codes(&answer(&mut s, owner(EncryptedSending::On))), [250]);
        // An alias that is off does not exist.
        feed_raw(&mut s, b"RCPT TO:<other@secure.example.org>\r\n");
        let out = answer(&mut s, owner(EncryptedSending::Off));
        assert!(
            replies(&out)[0].starts_with("550 5.1.1"),
            "{:?}",
            replies(&out)
        );
    }

    fn memory_says(domain: &str, level: mailtls_core::TlsLevel) -> LookupFacts {
        let key = mailtls_core::memory::MemoryKey::domain(domain);
        LookupFacts {
            memory: vec![(
                domain.to_owned(),
                Some(MemoryEntry {
                    key,
                    first_tls_at: None,
                    last_tls_at: None,
                    last_seen_at: 1,
                    best_level: level,
                    last_level: level,
                    protocol: Some("TLSv1.3".into()),
                    cipher: None,
                    cert_sha256: None,
                    last_failure: None,
                    last_failure_at: None,
                }),
            )],
            ..LookupFacts::default()
        }
    }

    /// SPEC §4, sending from the alias: a recipient whose provider is known
    /// not to meet the requirement is refused at RCPT.
    #[test]
    fn mail_from_the_alias_is_checked_against_the_memory() {
        let mut s = authenticated_as("me@example.org");
        let out = feed_raw(&mut s, b"MAIL FROM:<me@secure.example.org>\r\n");
        let request = lookup_of(&out).expect("asks for the owner");
        assert_eq!(request.alias_local.as_deref(), Some("me"));
        assert_eq!(codes(&answer(&mut s, owner(EncryptedSending::On))), [250]);

        let out = feed_raw(&mut s, b"RCPT TO:<a@plain.example>\r\n");
        assert_eq!(
            lookup_of(&out).map(|r| r.memory_domains.clone()),
            Some(vec!["plain.example".to_owned()])
        );
        let out = answer(
            &mut s,
            memory_says("plain.example", mailtls_core::TlsLevel::None),
        );
        let text = &replies(&out)[0];
        assert!(
            text.starts_with("550 5.7.10") && text.contains("no SSL"),
            "{text}"
        );

        feed_raw(&mut s, b"RCPT TO:<b@unknown.example>\r\n");
        assert_eq!(
            codes(&answer(&mut s, LookupFacts::default())),
            [250],
            "unknown: delivery decides"
        );
        let out = feed_raw(
            &mut s,
            b"DATA\r\nFrom: me@secure.example.org\r\n\r\nhi\r\n.\r\n",
        );
        let Some(Action::Enqueue(message)) = out.last() else {
            panic!("queued: {out:?}")
        };
        assert_eq!(message.recipients, ["b@unknown.example"]);
        assert_eq!(
            message.sender_requirement,
            Some(SenderRequirement::default())
        );
    }

    #[test]
    fn someone_elses_alias_is_refused() {
        let mut s = authenticated_as("you@example.org");
        feed_raw(&mut s, b"MAIL FROM:<me@secure.example.org>\r\n");
        let out = answer(&mut s, owner(EncryptedSending::On));
        assert!(
            replies(&out)[0].starts_with("553 5.7.1"),
            "{:?}",
            replies(&out)
        );
    }

    /// SPEC §4, header-based: `From:` at the secure domain is checked at the
    /// end of DATA and refuses the whole message.
    #[test]
    fn a_from_header_at_the_secure_domain_is_checked_at_the_end_of_data() {
        let mut s = authenticated_as("me@example.org");
        let out = feed_raw(&mut s, b"MAIL FROM:<me@example.org>\r\n");
        assert_eq!(
            lookup_of(&out).and_then(|r| r.user.as_deref()),
            Some("me@example.org")
        );
        assert_eq!(codes(&answer(&mut s, LookupFacts::default())), [250]);
        assert_eq!(
            codes(&feed_raw(&mut s, b"RCPT TO:<a@plain.example>\r\n")),
            [250]
        );
        let out = feed_raw(
            &mut s,
            b"DATA\r\nFrom: Me <me@secure.example.org>\r\n\r\nhi\r\n.\r\n",
        );
        let request = lookup_of(&out).expect("asks");
        assert_eq!(request.memory_domains, ["plain.example"]);
        let mut facts = memory_says("plain.example", mailtls_core::TlsLevel::None);
        facts.alias_owner = owner(EncryptedSending::On).alias_owner;
        let out = answer(&mut s, facts);
        let text = &replies(&out)[0];
        assert!(
            text.starts_with("550 5.7.10") && text.contains("not sent to anyone"),
            "{text}"
        );
        assert!(!out.iter().any(|a| matches!(a, Action::Enqueue(_))));
    }

    /// SPEC §4: a user with Encrypted Sending on needs TLS from any address.
    #[test]
    fn a_users_own_setting_applies_to_all_their_mail() {
        let mut s = authenticated_as("me@example.org");
        feed_raw(&mut s, b"MAIL FROM:<me@example.org>\r\n");
        let out = answer(
            &mut s,
            LookupFacts {
                user_setting: Some(EncryptedSending::Expert(
                    mailtls_core::sending::ExpertSettings {
                        min_level: mailtls_core::sending::MinLevel::Dane,
                        ..Default::default()
                    },
                )),
                ..LookupFacts::default()
            },
        );
        assert_eq!(codes(&out), [250]);
        feed_raw(&mut s, b"RCPT TO:<a@tls.example>\r\n");
        let out = answer(
            &mut s,
            memory_says("tls.example", mailtls_core::TlsLevel::Tls),
        );
        assert!(
            replies(&out)[0].contains("not DANE ok"),
            "{:?}",
            replies(&out)
        );
    }

    #[test]
    fn a_store_failure_is_temporary() {
        let mut s = mx_session(true);
        feed_raw(
            &mut s,
            b"EHLO p\r\nMAIL FROM:<x@e.test>\r\nRCPT TO:<me@example.org>\r\n",
        );
        let mut out = Vec::new();
        s.looked_up(Err::<LookupFacts, _>("down"), &mut out);
        assert_eq!(codes(&out), [451]);
    }

    fn authenticated_as(user: &str) -> Session {
        let mut s = session(false, true);
        let out = feed_raw(&mut s, b"EHLO c.test\r\nAUTH LOGIN\r\n");
        assert_eq!(codes(&out), [250, 334]);
        let user_line = format!("{}\r\n", encode_base64(user.as_bytes()));
        feed_raw(&mut s, user_line.as_bytes());
        let out = feed_raw(&mut s, b"c2VjcmV0\r\n");
        assert!(matches!(out.last(), Some(Action::VerifyPassword { .. })));
        let mut out = Vec::new();
        s.auth_checked(Ok::<bool, ()>(true), &mut out);
        assert_eq!(codes(&out), [235]);
        s
    }
}
