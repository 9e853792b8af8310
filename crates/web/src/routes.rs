//! The router, the limits every request passes through, and the server.
//!
//! SPEC §7: "Every input from the network or a user has a size and time
//! limit and gets a clear error, never a panic." Here: the request target
//! is at most [`MAX_URI_BYTES`] (`414` otherwise), a body at most
//! [`MAX_BODY_BYTES`] (`413`), and a handler gets
//! `WebConfig::handler_timeout` (`503` otherwise). Every response carries a
//! Content-Security-Policy that allows only this origin's own scripts and
//! styles (no inline script, so injected markup cannot run), and
//! `X-Content-Type-Options: nosniff`. At most `WebConfig::max_connections`
//! connections are open at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::{App, api, pages};

/// Longest request target (path and query) accepted, bytes.
pub const MAX_URI_BYTES: usize = 4096;
/// Largest request body accepted, bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The whole site: pages, assets and the API.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(pages::check_page))
        .route("/compose", get(pages::compose_page))
        .route(
            "/settings",
            get(pages::settings_page).post(pages::settings_form),
        )
        .route("/signin", post(pages::signin))
        .route("/signout", post(pages::signout))
        .route("/assets/style.css", get(pages::style))
        .route("/assets/compose.js", get(pages::compose_js))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/v1/check", get(api::check))
        .route("/api/v1/events", get(api::events))
        .route(
            "/api/v1/settings",
            get(api::get_settings).put(api::put_settings),
        )
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/health", get(api::health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(app.clone(), limits))
        .with_state(app)
}

async fn not_found(request: Request) -> Response {
    if request.uri().path().starts_with("/api/") {
        ApiError::new(StatusCode::NOT_FOUND, "no such endpoint").into_response()
    } else {
        pages::not_found().into_response()
    }
}

/// Size and time limits and the security headers, for every request.
async fn limits(State(app): State<App>, request: Request, next: Next) -> Response {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    let mut response = if uri_len > MAX_URI_BYTES {
        ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response()
    } else {
        match tokio::time::timeout(app.config().handler_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request took too long; try again",
            )
            .into_response(),
        }
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// An error answer of the API: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a status and a message for a person.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// `429 Too Many Requests` with `Retry-After` (RFC 6585 §4).
    pub fn too_many(retry_after: Duration) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "too many requests from your address; try again in {} s",
                retry_after.as_secs()
            ),
            retry_after: Some(retry_after),
        }
    }

    /// `500`, logged; the client learns nothing about the cause.
    pub fn internal(what: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(error = %what, "web: internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the operator's log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(wait) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// The client's IP address (the TCP peer; behind a proxy, the proxy's).
/// Without connection information (a test calling the router directly),
/// `0.0.0.0`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientIp, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        ))
    }
}

/// The response header that marks a stream of Server-Sent Events as not
/// to be buffered by proxies.
pub(crate) const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// A running web server.
pub struct WebServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WebServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends the event streams, lets requests in progress
    /// finish (at most 5 s), and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Binds `listen` and serves the site until [`WebServer::shutdown`].
pub async fn serve(listen: SocketAddr, app: App) -> std::io::Result<WebServer> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let limited = LimitedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(app.config().max_connections.max(1))),
    }
    // Answers are small and written at once: no reason to wait for
    // Nagle's algorithm.
    .tap_io(|io: &mut Counted| {
        let _ = io.stream.set_nodelay(true);
    });
    let app = app.with_shutdown(stopped.clone());
    let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        let result = axum::serve(limited, service)
            .with_graceful_shutdown(until_true(stopped))
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "web server stopped");
        }
    });
    Ok(WebServer { addr, stop, task })
}

/// Resolves once the watch value is true (or its sender is gone).
pub(crate) async fn until_true(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A TCP listener that holds at most `permits` connections open at once
/// (the mini-redis shape): at the limit it stops accepting, and the kernel's
/// backlog holds new clients until a connection closes.
struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for LimitedListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        // The semaphore is never closed, so acquiring only waits.
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok();
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    return (
                        Counted {
                            stream,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                // Out of file descriptors and the like: wait a little, as
                // axum's own listener does, instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "web: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that gives its permit back when it closes.
struct Counted {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
