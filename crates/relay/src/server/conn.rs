//! The thin async driver of one connection: reads bytes, frames lines,
//! feeds the [`Session`], runs its [`Action`]s (replies, the TLS upgrade,
//! password checks, spooling and queueing), and enforces the idle timeout
//! and shutdown. No SMTP rule is decided here.
//!
//! RFC 2920 (PIPELINING): replies are buffered while complete commands are
//! waiting in the input, and written when the input runs dry, before any
//! wait, and before the TLS handshake.
//!
//! CVE-2011-0411: on STARTTLS the rest of the input buffer is dropped
//! before the handshake; bytes still in the kernel reach the TLS handshake
//! and fail it. Either way nothing sent before TLS is executed after it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailtls_core::memory::MemoryKey;
use mailtls_store::sql::bounded;
use mailtls_store::{NewMessage, StoreError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ServerStore;
use super::framing::{LineFramer, Step};
use super::session::{
    AcceptedMessage, Action, AliasOwner, Client, LookupFacts, LookupRequest, Session, SessionConfig,
};
use super::tls::tls_info;
use super::trace::received_header;
use crate::spool::Spool;

/// Read at most this much at once.
const READ_CHUNK: usize = 16 * 1024;

/// What every connection of the listeners shares.
pub(crate) struct Shared<S> {
    pub(crate) session: Arc<SessionConfig>,
    pub(crate) store: S,
    pub(crate) spool: Spool,
    pub(crate) wake: Arc<Notify>,
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) idle_timeout: Duration,
    pub(crate) trusted: Vec<crate::config::Network>,
    pub(crate) shutdown: CancellationToken,
}

/// How a conversation over one transport ended.
enum Ended<IO> {
    /// The session is over (QUIT, error limit, timeout, EOF, shutdown).
    Closed,
    /// STARTTLS was accepted: upgrade this transport and go on.
    StartTls(IO),
}

/// Serves one accepted connection to the end; errors are logged.
pub(crate) async fn serve<S>(
    shared: Arc<Shared<S>>,
    tcp: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
) where
    S: ServerStore,
{
    if let Err(e) = serve_inner(&shared, tcp, peer, implicit_tls).await {
        debug!(%peer, error = %e, "submission session ended with an error");
    }
}

async fn serve_inner<S>(
    shared: &Shared<S>,
    tcp: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
) -> std::io::Result<()>
where
    S: ServerStore,
{
    let ip = peer.ip().to_canonical();
    let client = Client {
        ip,
        trusted: shared.trusted.iter().any(|n| n.contains(ip)),
    };
    if implicit_tls {
        // RFC 8314 §3.3: the handshake comes first, within the idle limit.
        let tls = handshake(shared, tcp).await?;
        let info = tls_info(tls.get_ref().1);
        let mut session = Session::new(shared.session.clone(), client, Some(info));
        converse(shared, &mut session, tls, true).await?;
        return Ok(());
    }
    let mut session = Session::new(shared.session.clone(), client, None);
    if let Ended::StartTls(tcp) = converse(shared, &mut session, tcp, true).await? {
        let tls = handshake(shared, tcp).await?;
        session.tls_established(tls_info(tls.get_ref().1));
        // RFC 3207 §4.2: no new greeting; the client starts with EHLO.
        converse(shared, &mut session, tls, false).await?;
    }
    Ok(())
}

async fn handshake<S>(
    shared: &Shared<S>,
    tcp: TcpStream,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    tokio::time::timeout(shared.idle_timeout, shared.acceptor.accept(tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// Runs the dialogue over one transport until it ends or asks for TLS.
async fn converse<S, IO>(
    shared: &Shared<S>,
    session: &mut Session,
    mut io: IO,
    greet: bool,
) -> std::io::Result<Ended<IO>>
where
    S: ServerStore,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut output: Vec<u8> = Vec::new();
    let mut framer = LineFramer::default();
    let mut actions: Vec<Action> = Vec::new();
    if greet {
        session.greeting().write_to(&mut output);
    }
    loop {
        // Everything complete in the input, in order.
        let mut used = 0;
        while session.wants_input() {
            match framer.next(&input[used..], session.line_limit()) {
                Step::Frame(frame, n) => {
                    used += n;
                    session.on_frame(frame, &mut actions);
                }
                Step::NeedMore(n) => {
                    used += n;
                    break;
                }
            }
            if let Some(ended) =
                run_actions(shared, session, &mut actions, &mut output, &mut io).await?
            {
                // CVE-2011-0411: `input` (whatever followed STARTTLS) is
                // dropped here, unread.
                return Ok(ended.map(io));
            }
        }
        input.drain(..used);
        flush(&mut io, &mut output, shared.idle_timeout).await?;
        if !session.wants_input() {
            return Ok(Ended::Closed);
        }
        input.reserve(READ_CHUNK);
        let read = tokio::select! {
            () = shared.shutdown.cancelled() => None,
            read = tokio::time::timeout(shared.idle_timeout, io.read_buf(&mut input)) => Some(read),
        };
        match read {
            None => session.shutting_down(&mut actions),
            Some(Err(_elapsed)) => session.timed_out(&mut actions),
            Some(Ok(Ok(0))) => return Ok(Ended::Closed),
            Some(Ok(Ok(_))) => continue,
            Some(Ok(Err(e))) => return Err(e),
        }
        if let Some(ended) =
            run_actions(shared, session, &mut actions, &mut output, &mut io).await?
        {
            return Ok(ended.map(io));
        }
    }
}

/// The outcome of running actions when the transport changes hands.
enum Handover {
    Closed,
    StartTls,
}

impl Handover {
    fn map<IO>(self, io: IO) -> Ended<IO> {
        match self {
            Handover::Closed => Ended::Closed,
            Handover::StartTls => Ended::StartTls(io),
        }
    }
}

/// Runs the session's actions (and those they lead to) in order.
async fn run_actions<S, IO>(
    shared: &Shared<S>,
    session: &mut Session,
    actions: &mut Vec<Action>,
    output: &mut Vec<u8>,
    io: &mut IO,
) -> std::io::Result<Option<Handover>>
where
    S: ServerStore,
    IO: AsyncWrite + Unpin,
{
    let mut queue: std::collections::VecDeque<Action> = actions.drain(..).collect();
    let mut woken = false;
    while let Some(action) = queue.pop_front() {
        let mut more = Vec::new();
        match action {
            Action::Reply(reply) => reply.write_to(output),
            Action::Pause(delay) => {
                flush(io, output, shared.idle_timeout).await?;
                tokio::time::sleep(delay).await;
            }
            Action::StartTls => {
                flush(io, output, shared.idle_timeout).await?;
                return Ok(Some(Handover::StartTls));
            }
            Action::Close => {
                flush(io, output, shared.idle_timeout).await?;
                // Best effort (a TLS close_notify): the client may be gone.
                let _ = tokio::time::timeout(shared.idle_timeout, io.shutdown()).await;
                return Ok(Some(Handover::Closed));
            }
            Action::VerifyPassword { user, password } => {
                flush(io, output, shared.idle_timeout).await?;
                let result = bounded(shared.store.verify_password(&user, &password.0)).await;
                match &result {
                    Ok(true) => info!(%user, "submission AUTH succeeded"),
                    Ok(false) => warn!(%user, "submission AUTH failed"),
                    Err(e) => warn!(%user, error = %e, "submission AUTH: store failed"),
                }
                session.auth_checked(result, &mut more);
            }
            Action::Lookup(request) => {
                flush(io, output, shared.idle_timeout).await?;
                let result = bounded(lookup(&shared.store, &request)).await;
                if let Err(e) = &result {
                    warn!(error = %e, "SMTP session: store look-up failed; answered 451");
                }
                session.looked_up(result, &mut more);
            }
            Action::Enqueue(message) => {
                flush(io, output, shared.idle_timeout).await?;
                let result = accept_message(shared, *message).await;
                woken |= result.is_ok();
                session.queued(result, &mut more);
            }
        }
        // Follow-ups run before what was already queued.
        for action in more.into_iter().rev() {
            queue.push_front(action);
        }
    }
    if woken {
        // After the 250 is on its way: the queue runner may start at once.
        flush(io, output, shared.idle_timeout).await?;
        shared.wake.notify_one();
    }
    Ok(None)
}

/// Writes the buffered replies. A client that does not read them within the
/// idle timeout is gone: the session ends rather than hold a connection slot.
async fn flush<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    output: &mut Vec<u8>,
    limit: Duration,
) -> std::io::Result<()> {
    if output.is_empty() {
        return Ok(());
    }
    let write = async {
        io.write_all(output).await?;
        io.flush().await
    };
    tokio::time::timeout(limit, write).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "client does not read replies")
    })??;
    output.clear();
    Ok(())
}

/// Answers what the session asked of the store (SPEC §4's facts).
async fn lookup<S: ServerStore>(
    store: &S,
    request: &LookupRequest,
) -> Result<LookupFacts, StoreError> {
    let mut facts = LookupFacts::default();
    if let Some(local) = &request.alias_local {
        facts.alias_owner = store.alias_owner(local).await?.map(|owner| AliasOwner {
            address: owner.address,
            setting: owner.encrypted_sending,
        });
    }
    if let Some(user) = &request.user {
        facts.user_setting = match store.settings(user).await {
            Ok(settings) => Some(settings.encrypted_sending),
            Err(StoreError::NoSuchUser(_) | StoreError::InvalidAddress(_)) => None,
            Err(e) => return Err(e),
        };
    }
    if let Some(user) = &request.local_user {
        facts.local_user_exists = store.user_exists(user).await?;
    }
    for domain in &request.memory_domains {
        let entry = store.entry(&MemoryKey::domain(domain)).await?;
        facts.memory.push((domain.clone(), entry));
    }
    Ok(facts)
}

/// Why an accepted message could not be queued (the client gets `451`).
#[derive(Debug, thiserror::Error)]
enum AcceptError {
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error("queue: {0}")]
    Queue(#[from] mailtls_store::StoreError),
}

/// Spool (durably) and queue the message; returns its id. On any failure
/// nothing stays queued and the spool file is gone.
async fn accept_message<S>(
    shared: &Shared<S>,
    message: AcceptedMessage,
) -> Result<String, AcceptError>
where
    S: ServerStore,
{
    let id = Spool::new_id();
    let now = mailtls_core::clock::unix_now();
    let header = received_header(&message.trace, &shared.session.hostname, &id, now);
    let size = (header.len() + message.body.len()) as u64;
    let mut writer = shared.spool.create(&id).await?;
    writer.write_all(header.as_bytes()).await?;
    writer.write_all(&message.body).await?;
    writer.commit().await?;
    let new = NewMessage {
        id: id.clone(),
        sender: message.sender,
        recipients: message.recipients,
        size,
        received_at: now,
        auth_user: message.trace.auth_user.clone(),
        client: format!("{} [{}]", message.trace.helo, message.trace.client_ip),
        sender_requirement: message.sender_requirement,
    };
    if let Err(e) = bounded(shared.store.enqueue(&new)).await {
        // Fail safe (issue #6): the body is on local disk; keep the envelope
        // beside it and accept. The queue runner moves it into the store
        // when the store answers again.
        match shared.spool.hold(&new).await {
            Ok(()) => {
                warn!(%id, error = %e, "the store cannot queue the message; envelope held on local disk, message accepted");
            }
            Err(held) => {
                warn!(%id, error = %e, hold_error = %held, "queueing failed and the envelope cannot be held; message refused with 451");
                if let Err(e) = shared.spool.remove(&id).await {
                    warn!(%id, error = %e, "could not remove the spool file of a refused message");
                }
                return Err(e.into());
            }
        }
    }
    info!(%id, sender = %new.sender, recipients = new.recipients.len(), size, client = %new.client,
        auth = new.auth_user.as_deref().unwrap_or("-"), "message queued");
    Ok(id)
}
