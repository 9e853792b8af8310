//! The JSON API under `/api/v1/` (SPEC §5, issue #5), as described by
//! `openapi.json` in this crate.
//!
//! * `GET /api/v1/check?address=…` (repeatable): one answer per address,
//!   at once: the TLS memory's, or `SSL ?` while a background probe runs.
//! * `GET /api/v1/events?address=…`: Server-Sent Events (the WHATWG HTML
//!   "server-sent events" format), one `check` event per address when its
//!   answer is known, then `done`.
//! * `GET`/`PUT /api/v1/settings`: the signed-in user's Encrypted Sending
//!   (session cookie; writes need the `X-CSRF-Token` header).
//! * `GET /api/v1/health`: whether this node reaches its store (issue #6:
//!   a fleet's PostgreSQL); `503` when not, for load balancers and
//!   monitoring.
//!
//! Errors are `{"error": "..."}` with a 4xx/5xx status; the public check
//! and the event stream are rate-limited per client (`429` with
//! `Retry-After`).

use std::collections::HashSet;
use std::convert::Infallible;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::future::join_all;
use mailtls_core::Address;
use mailtls_core::sending::{EncryptedSending, MinLevel, SenderRequirement, TlsVersion};
use mailtls_store::{Settings, StoreError, UserSettings};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::App;
use crate::answer::{Answer, is_settled};
use crate::routes::{ApiError, ClientIp, X_ACCEL_BUFFERING};
use crate::session::{CSRF_HEADER, Session, tokens_match};

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Longest `address` value accepted, bytes (an address is at most 254
/// octets, RFC 5321 §4.5.3.1.3; a little slack for typing around it).
pub const MAX_ADDRESS_BYTES: usize = 512;

/// What `GET /api/v1/health` says.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok`, or `degraded` when the store cannot be reached.
    pub status: &'static str,
    /// `ok`, or why the store cannot be reached.
    pub store: String,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// This node's name in a fleet, if set.
    pub node: Option<String>,
}

/// `GET /api/v1/health`: one round trip to the store. Not rate-limited
/// (monitoring polls it), and cheap.
pub async fn health(State(app): State<App>) -> Response {
    let store = app.store();
    let backend = store.backend().as_str();
    let (status, code, store_state) = match store.ping().await {
        Ok(()) => ("ok", StatusCode::OK, "ok".to_owned()),
        Err(e) => ("degraded", StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let health = Health {
        status,
        store: store_state,
        backend,
        node: store.node().map(str::to_owned),
    };
    (code, Json(health)).into_response()
}

/// `GET /api/v1/check`.
pub async fn check(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let addresses = addresses(query.as_deref(), app.config().max_addresses)?;
    let cost = u32::try_from(addresses.len()).unwrap_or(u32::MAX);
    app.check_limit()
        .take(ip, cost)
        .map_err(ApiError::too_many)?;
    let requirement = app.requirement(&headers).await;
    let answers: Vec<Answer> = join_all(
        addresses
            .iter()
            .map(|a| app.answer(a, requirement.as_ref())),
    )
    .await;
    let mut response = Json(answers).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /api/v1/events`: an answer per address as soon as it is known.
pub async fn events(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let inputs = addresses(query.as_deref(), app.config().max_addresses)?;
    app.check_limit().take(ip, 1).map_err(ApiError::too_many)?;
    let requirement = app.requirement(&headers).await;
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(feed_events(app, inputs, requirement, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<Event, Infallible>(event), rx))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    Ok(response)
}

/// Sends each address's answer once it is settled, then `done`; gives up
/// after the stream's lifetime, at shutdown, or when the client leaves.
async fn feed_events(
    app: App,
    inputs: Vec<String>,
    requirement: Option<SenderRequirement>,
    tx: mpsc::Sender<Event>,
) {
    // Subscribe before looking: a probe finishing in between is not missed.
    let mut done = app.probes().subscribe();
    let mut waiting: Vec<Address> = Vec::new();
    for input in &inputs {
        let answer = app.answer(input, requirement.as_ref()).await;
        if is_settled(&answer) {
            if send(&tx, &answer).await.is_err() {
                return;
            }
        } else if let Ok(address) = Address::parse(input) {
            waiting.push(address);
        }
    }
    let deadline = tokio::time::sleep(app.config().event_stream_lifetime);
    tokio::pin!(deadline);
    let shutdown = app.shutting_down();
    tokio::pin!(shutdown);
    while !waiting.is_empty() {
        tokio::select! {
            () = &mut deadline => break,
            () = &mut shutdown => break,
            () = tx.closed() => return,
            received = done.recv() => match received {
                Ok(report) => {
                    let (now, still): (Vec<Address>, Vec<Address>) = waiting
                        .into_iter()
                        .partition(|a| a.domain().as_str() == report.domain);
                    waiting = still;
                    for address in now {
                        let answer = app.answer_from_probe(&address, &report, requirement.as_ref()).await;
                        if send(&tx, &answer).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let mut still = Vec::new();
                    for address in waiting {
                        let answer = app.answer(&address.to_string(), requirement.as_ref()).await;
                        if is_settled(&answer) {
                            if send(&tx, &answer).await.is_err() {
                                return;
                            }
                        } else {
                            still.push(address);
                        }
                    }
                    waiting = still;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
    let _ = tx.send(Event::default().event("done").data("{}")).await;
}

async fn send(tx: &mpsc::Sender<Event>, answer: &Answer) -> Result<(), ()> {
    let event = Event::default()
        .event("check")
        .json_data(answer)
        .map_err(|_| ())?;
    tx.send(event).await.map_err(|_| ())
}

/// The `address` values of a query string: at least one, at most `max`,
/// each at most [`MAX_ADDRESS_BYTES`]; other parameters are an error (a
/// typo should not silently check nothing).
pub fn addresses(query: Option<&str>, max: usize) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key != "address" {
            return Err(ApiError::bad_request(format!(
                "unknown parameter '{}': use address=…",
                key.chars().take(64).collect::<String>()
            )));
        }
        if value.len() > MAX_ADDRESS_BYTES {
            return Err(ApiError::bad_request(format!(
                "an address is longer than {MAX_ADDRESS_BYTES} bytes"
            )));
        }
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(ApiError::bad_request("an address is empty"));
        }
        if seen.insert(value.clone()) {
            out.push(value);
        }
        if out.len() > max {
            return Err(ApiError::bad_request(format!(
                "at most {max} addresses per request"
            )));
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad_request(
            "give at least one address: ?address=someone@example.org",
        ));
    }
    Ok(out)
}

/// The settings object of the API.
#[derive(Debug, Serialize)]
pub struct SettingsView {
    /// The account.
    pub address: String,
    /// Encrypted Sending: `{"mode": "off"|"on"|"expert", …expert fields}`.
    pub encrypted_sending: EncryptedSending,
    /// The secure alias, while Encrypted Sending is on and a secure domain
    /// is configured.
    pub secure_alias: Option<String>,
    /// What mail from this user must meet, for a person; `null` when off.
    pub requirement: Option<String>,
    /// The token `PUT` needs in `X-CSRF-Token`.
    pub csrf_token: String,
}

impl SettingsView {
    pub(crate) fn new(app: &App, settings: UserSettings, session: &Session) -> SettingsView {
        let secure_alias = app
            .config()
            .secure_domain
            .as_deref()
            .and_then(|d| settings.secure_alias(d));
        SettingsView {
            address: settings.address,
            requirement: settings.encrypted_sending.outbound().map(|r| r.to_string()),
            encrypted_sending: settings.encrypted_sending,
            secure_alias,
            csrf_token: session.csrf.clone(),
        }
    }
}

/// The body of `PUT /api/v1/settings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// `off`, `on` or `expert`.
    pub mode: String,
    /// Expert: `tls`, `verified` or `dane`.
    #[serde(default)]
    pub min_level: Option<String>,
    /// Expert: `1.2` or `1.3`.
    #[serde(default)]
    pub min_tls: Option<String>,
    /// Expert: `1.2` or `1.3`, for mail received at the alias.
    #[serde(default)]
    pub inbound_min_tls: Option<String>,
}

impl SettingsChange {
    /// The setting it asks for, or why it is not one.
    pub fn setting(&self) -> Result<EncryptedSending, String> {
        let empty_none =
            |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        let min_level = empty_none(&self.min_level)
            .map(|v| v.parse::<MinLevel>())
            .transpose()
            .map_err(|e| e.to_string())?;
        let version = |v: &Option<String>| {
            empty_none(v)
                .map(|v| v.parse::<TlsVersion>())
                .transpose()
                .map_err(|e| e.to_string())
        };
        EncryptedSending::from_parts(
            &self.mode,
            min_level,
            version(&self.min_tls)?,
            version(&self.inbound_min_tls)?,
        )
        .map_err(|e| e.to_string())
    }
}

/// `GET /api/v1/settings`.
pub async fn get_settings(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = signed_in(&app, &headers)?;
    let settings = app
        .store()
        .settings(&session.user)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(no_store(Json(SettingsView::new(&app, settings, &session))))
}

/// `PUT /api/v1/settings`.
pub async fn put_settings(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Json<SettingsChange>, JsonRejection>,
) -> Result<Response, ApiError> {
    let session = signed_in(&app, &headers)?;
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !tokens_match(given, &session.csrf) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "missing or wrong X-CSRF-Token header",
        ));
    }
    let Json(change) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let setting = change.setting().map_err(ApiError::bad_request)?;
    let settings = app
        .store()
        .set_encrypted_sending(&session.user, setting)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(no_store(Json(SettingsView::new(&app, settings, &session))))
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

fn no_store(body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn signed_in(app: &App, headers: &HeaderMap) -> Result<Session, ApiError> {
    app.sessions().from_headers(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not signed in: sign in on /settings",
        )
    })
}

pub(crate) fn store_error(error: &StoreError) -> ApiError {
    match error {
        StoreError::AliasTaken(local) => ApiError::new(
            StatusCode::CONFLICT,
            format!("the secure alias '{local}' belongs to another user"),
        ),
        StoreError::NoSuchUser(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "the account no longer exists")
        }
        other => ApiError::internal(other),
    }
}

impl App {
    /// What mail from the signed-in user must meet (SPEC §4: Encrypted
    /// Sending on, or the secure alias, which exists exactly then), or
    /// `None` when nobody is signed in or the setting is off.
    pub async fn requirement(&self, headers: &HeaderMap) -> Option<SenderRequirement> {
        let session = self.sessions().from_headers(headers)?;
        match self.store().settings(&session.user).await {
            Ok(settings) => settings.encrypted_sending.outbound(),
            Err(e) => {
                tracing::warn!(user = %session.user, error = %e, "web: cannot read the settings");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_repeatable_deduplicated_and_bounded() {
        let got = addresses(
            Some("address=a%40b.example&address=c@d.example&address=a@b.example"),
            20,
        )
        .expect("valid");
        assert_eq!(got, ["a@b.example", "c@d.example"]);
        assert!(addresses(None, 20).is_err());
        assert!(addresses(Some("adress=a@b.example"), 20).is_err());
        assert!(addresses(Some("address="), 20).is_err());
        assert!(addresses(Some("address=a@b&address=c@d&address=e@f"), 2).is_err());
        let long = format!("address={}", "x".repeat(MAX_ADDRESS_BYTES + 1));
        assert!(addresses(Some(&long), 20).is_err());
    }

    #[test]
    fn settings_changes_parse_through_the_core_rules() {
        let change = |mode: &str, level: Option<&str>| SettingsChange {
            mode: mode.into(),
            min_level: level.map(Into::into),
            min_tls: None,
            inbound_min_tls: None,
        };
        assert_eq!(change("on", None).setting(), Ok(EncryptedSending::On));
        assert!(change("on", Some("dane")).setting().is_err());
        assert!(change("sometimes", None).setting().is_err());
        assert!(matches!(
            change("expert", Some("dane")).setting(),
            Ok(EncryptedSending::Expert(_))
        ));
        assert!(change("expert", Some("")).setting().is_ok());
    }
}
