//! Shared set-up for the web tests: an [`App`] over a fresh SQLite store
//! and a checker whose DNS goes nowhere (answers come from the memory the
//! test fills in; a probe ends quickly with a DNS error).

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, Response, header};
use mailtls_check::{CheckConfig, Checker};
use mailtls_core::TlsLevel;
use mailtls_core::memory::{MemoryKey, Observation};
use mailtls_dns::{DnsConfig, DnsMode};
use mailtls_smtp::ProbeConfig;
use mailtls_store::{SqlStore, TlsMemory, Users};
use mailtls_web::{App, WebConfig};
use serde_json::Value;
use tower::ServiceExt;

pub struct TestApp {
    pub app: App,
    pub store: SqlStore,
    _dir: tempfile::TempDir,
}

pub const USER: &str = "me@example.org";
pub const PASSWORD: &str = "correct horse battery staple";

/// A checker that asks a DNS server that is not there: every probe ends
/// in a second or two with `DNS error`.
pub fn dead_end_checker() -> Checker {
    let config = CheckConfig {
        dns: DnsConfig {
            resolver: Some(SocketAddr::from(([127, 0, 0, 1], 9))),
            mode: DnsMode::Validate,
            trust_anchor: None,
            timeout: std::time::Duration::from_secs(1),
        },
        probe: ProbeConfig {
            helo_name: "web-test.example".into(),
            timeout: std::time::Duration::from_secs(2),
            port: 25,
            allow_private: false,
        },
    };
    Checker::new(&config).expect("checker")
}

pub async fn test_app(config: WebConfig) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::open_sqlite(&dir.path().join("web.sqlite"))
        .await
        .expect("store");
    store.add_user(USER, PASSWORD).await.expect("user");
    let app = App::new(dead_end_checker(), store.clone(), config);
    TestApp {
        app,
        store,
        _dir: dir,
    }
}

pub fn config() -> WebConfig {
    WebConfig {
        secure_domain: Some("secure.example.org".into()),
        ..WebConfig::default()
    }
}

/// Records what a delivery saw at `domain`.
pub async fn learn(store: &SqlStore, domain: &str, level: TlsLevel) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let tls = level != TlsLevel::None;
    let obs = Observation {
        at: now,
        level,
        protocol: tls.then(|| "TLSv1.3".to_owned()),
        cipher: tls.then(|| "TLS_AES_256_GCM_SHA384".to_owned()),
        cert_sha256: None,
        failure: (!tls).then(|| "no STARTTLS".to_owned()),
    };
    store
        .record(&MemoryKey::domain(domain), &obs)
        .await
        .expect("record");
}

pub struct Reply {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn content_type(&self) -> &str {
        self.header("content-type")
    }
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }
}

pub async fn call(app: &App, request: Request<Body>) -> Reply {
    let response: Response<Body> = mailtls_web::router(app.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .expect("body");
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(app: &App, uri: &str, cookie: Option<&str>) -> Reply {
    let mut request = Request::get(uri);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    call(app, request.body(Body::empty()).expect("request")).await
}

pub async fn post_form(app: &App, uri: &str, cookie: Option<&str>, form: &str) -> Reply {
    let mut request =
        Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    call(
        app,
        request.body(Body::from(form.to_owned())).expect("request"),
    )
    .await
}

/// The value of the hidden `csrf` field in a page.
pub fn csrf_field(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_owned()
}

/// `name=value` of the first Set-Cookie with that name.
pub fn cookie_pair(reply: &Reply, name: &str) -> String {
    reply
        .cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next().map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", reply.cookies()))
}

/// Signs in as [`USER`]; the session cookie (`name=value`).
pub async fn sign_in(app: &App) -> String {
    let page = get(app, "/settings", None).await;
    let signin_cookie = cookie_pair(&page, "mailtls_signin");
    let token = csrf_field(&page.body);
    let form = format!(
        "csrf={token}&address={}&password={}",
        form_urlencoded::byte_serialize(USER.as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect::<String>()
    );
    let reply = post_form(app, "/signin", Some(&signin_cookie), &form).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    cookie_pair(&reply, "mailtls_session")
}
