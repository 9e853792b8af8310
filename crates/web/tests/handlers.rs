//! Every endpoint through the router (issue #5 "Handler tests for every
//! endpoint, including bad input and rate limiting"), with a real SQLite
//! store and a checker whose DNS goes nowhere.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use common::*;
use mailtls_core::TlsLevel;
use mailtls_web::WebConfig;

// ---- GET /api/v1/check: SPEC §1 "the TLS memory first" -------------------

#[tokio::test]
async fn check_answers_known_domains_from_memory_and_unknown_ones_ssl_unknown_at_once() {
    let t = test_app(config()).await;
    learn(&t.store, "known.example", TlsLevel::Tls).await;
    learn(&t.store, "dane.example", TlsLevel::Dane).await;
    learn(&t.store, "plain.example", TlsLevel::None).await;
    let reply = get(
        &t.app,
        "/api/v1/check?address=a@known.example&address=b%40dane.example&address=c@plain.example&address=d@never-seen.example",
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.content_type().starts_with("application/json"));
    let v = reply.json();
    let statuses: Vec<&str> = (0..4)
        .map(|i| v[i]["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["SSL ok", "DANE ok", "no SSL", "SSL ?"]);
    assert_eq!(v[0]["source"], "memory");
    assert_eq!(v[0]["details"]["tls_version"], "TLSv1.3");
    assert_eq!(v[0]["details"]["cipher"], "TLS_AES_256_GCM_SHA384");
    assert_eq!(v[1]["details"]["dane"], "ok");
    assert_eq!(v[3]["level"], "unknown");
    assert_eq!(v[3]["pending"], true, "a background probe was started");
    // Not signed in: no sending verdict.
    assert!(v[0].get("sendable").is_none());
}

// ---- Issue #6: the store unreachable ---------------------------------------

/// When the store cannot be read, a domain this node has read before is
/// answered from its last copy, marked `stale`; the health endpoint says
/// the node is degraded (`503`).
#[tokio::test]
async fn without_the_store_answers_are_marked_stale_and_health_is_503() {
    let t = test_app(config()).await;
    learn(&t.store, "known.example", TlsLevel::Tls).await;
    let health = get(&t.app, "/api/v1/health", None).await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["backend"], "sqlite");
    let fresh = get(&t.app, "/api/v1/check?address=a@known.example", None).await;
    assert!(fresh.json()[0].get("stale").is_none(), "{}", fresh.body);

    t.store.close().await;
    // Past the short read cache: the store is asked, and fails.
    tokio::time::sleep(mailtls_web::probes::ENTRY_TTL + Duration::from_millis(200)).await;
    let stale = get(&t.app, "/api/v1/check?address=a@known.example", None).await;
    assert_eq!(stale.status, 200, "{}", stale.body);
    let v = &stale.json()[0];
    assert_eq!(
        (v["status"].as_str(), v["stale"].as_bool()),
        (Some("SSL ok"), Some(true)),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("possibly stale")),
        "{v}"
    );
    let health = get(&t.app, "/api/v1/health", None).await;
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.json()["status"], "degraded");
}

#[tokio::test]
async fn check_of_an_invalid_address_is_an_answer_not_an_error() {
    let t = test_app(config()).await;
    let reply = get(&t.app, "/api/v1/check?address=not-an-address", None).await;
    assert_eq!(reply.status, 200);
    let v = reply.json();
    assert_eq!(v[0]["problem"], "invalid_address");
    assert_eq!(v[0]["headline"], "invalid address");
    assert_eq!(v[0]["source"], "none");
}

#[tokio::test]
async fn check_refuses_bad_input_with_a_json_error() {
    let t = test_app(config()).await;
    let long_address = format!("/api/v1/check?address={}@x.example", "a".repeat(600));
    let too_many: String = (0..21)
        .map(|i| format!("address=u{i}@x.example"))
        .collect::<Vec<_>>()
        .join("&");
    for uri in [
        "/api/v1/check".to_owned(),
        "/api/v1/check?address=".to_owned(),
        "/api/v1/check?adress=a@b.example".to_owned(),
        long_address,
        format!("/api/v1/check?{too_many}"),
    ] {
        let reply = get(&t.app, &uri, None).await;
        assert_eq!(reply.status, 400, "{uri}: {}", reply.body);
        assert!(
            reply.json()["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
        );
    }
    let huge = format!("/api/v1/check?address={}", "a".repeat(5000));
    let reply = get(&t.app, &huge, None).await;
    assert_eq!(reply.status, 414);
    assert!(reply.json()["error"].is_string());
}

// SPEC §7: "The public check is rate-limited."
#[tokio::test]
async fn check_is_rate_limited_per_client_with_retry_after() {
    let t = test_app(WebConfig {
        check_rate_per_minute: 3,
        ..config()
    })
    .await;
    learn(&t.store, "known.example", TlsLevel::Tls).await;
    let uri = "/api/v1/check?address=a@known.example";
    for _ in 0..3 {
        assert_eq!(get(&t.app, uri, None).await.status, 200);
    }
    let reply = get(&t.app, uri, None).await;
    assert_eq!(reply.status, 429);
    let wait: u64 = reply
        .header("retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(
        reply.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many"))
    );
    // Each address costs one: two addresses when none is left are refused too.
    let two = get(
        &t.app,
        "/api/v1/check?address=a@known.example&address=b@known.example",
        None,
    )
    .await;
    assert_eq!(two.status, 429);
    // The check page shares the limit.
    let page = get(&t.app, "/?address=a@known.example", None).await;
    assert_eq!(page.status, 429);
    assert!(!page.header("retry-after").is_empty());
}

// ---- GET /api/v1/events --------------------------------------------------

#[tokio::test]
async fn events_send_known_answers_then_done() {
    let t = test_app(config()).await;
    learn(&t.store, "known.example", TlsLevel::Tls).await;
    let reply = get(&t.app, "/api/v1/events?address=a@known.example", None).await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type().starts_with("text/event-stream"));
    assert!(reply.body.contains("event: check"), "{}", reply.body);
    assert!(
        reply.body.contains("\"status\":\"SSL ok\""),
        "{}",
        reply.body
    );
    assert!(
        reply.body.trim_end().ends_with("data: {}"),
        "{}",
        reply.body
    );
}

/// SPEC §1: "the check may probe the MX hosts live … the web UI updates in
/// place": an unknown domain's answer arrives on the stream when the
/// background probe ends (here with a DNS error: the resolver is absent).
#[tokio::test]
async fn events_deliver_the_background_probe_result() {
    let t = test_app(config()).await;
    let first = get(&t.app, "/api/v1/check?address=x@unknown.example", None).await;
    assert_eq!(first.json()[0]["pending"], true);
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        get(&t.app, "/api/v1/events?address=x@unknown.example", None),
    )
    .await
    .expect("the stream ends once the probe has answered");
    let data = reply
        .body
        .lines()
        .find_map(|l| {
            l.strip_prefix("data: ")
                .filter(|d| d.contains("unknown.example"))
        })
        .unwrap_or_else(|| panic!("no check event: {}", reply.body));
    let answer: serde_json::Value = serde_json::from_str(data).expect("json");
    assert_eq!(answer["source"], "probe");
    assert_eq!(answer["pending"], false);
    assert!(answer["problem"].is_string(), "{answer}");
    // The next check reuses the probe's answer instead of probing again.
    let again = get(&t.app, "/api/v1/check?address=y@unknown.example", None).await;
    assert_eq!(again.json()[0]["source"], "probe");
    assert_eq!(again.json()[0]["address"], "y@unknown.example");
}

#[tokio::test]
async fn events_refuse_bad_input() {
    let t = test_app(config()).await;
    for uri in ["/api/v1/events", "/api/v1/events?address=&x=1"] {
        let reply = get(&t.app, uri, None).await;
        assert_eq!(reply.status, 400, "{uri}");
        assert!(reply.json()["error"].is_string());
    }
}

// ---- settings: sign-in, session, CSRF ------------------------------------

#[tokio::test]
async fn settings_api_needs_a_session_and_a_csrf_token() {
    let t = test_app(config()).await;
    assert_eq!(get(&t.app, "/api/v1/settings", None).await.status, 401);
    let session = sign_in(&t.app).await;
    let reply = get(&t.app, "/api/v1/settings", Some(&session)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v = reply.json();
    assert_eq!(v["address"], USER);
    assert_eq!(v["encrypted_sending"]["mode"], "off");
    assert!(v["secure_alias"].is_null());
    let csrf = v["csrf_token"].as_str().expect("token").to_owned();

    let put = |body: &'static str, token: Option<String>, content_type: &'static str| {
        let mut request = Request::put("/api/v1/settings")
            .header(header::COOKIE, session.clone())
            .header(header::CONTENT_TYPE, content_type);
        if let Some(token) = token {
            request = request.header("x-csrf-token", token);
        }
        request.body(Body::from(body)).expect("request")
    };
    let no_token = call(&t.app, put(r#"{"mode":"on"}"#, None, "application/json")).await;
    assert_eq!(no_token.status, 403);
    let wrong = call(
        &t.app,
        put(r#"{"mode":"on"}"#, Some("0".repeat(64)), "application/json"),
    )
    .await;
    assert_eq!(wrong.status, 403);
    let bad_mode = call(
        &t.app,
        put(
            r#"{"mode":"sometimes"}"#,
            Some(csrf.clone()),
            "application/json",
        ),
    )
    .await;
    assert_eq!(bad_mode.status, 400);
    assert!(
        bad_mode.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("sometimes"))
    );
    let expert_only = call(
        &t.app,
        put(
            r#"{"mode":"on","min_level":"dane"}"#,
            Some(csrf.clone()),
            "application/json",
        ),
    )
    .await;
    assert_eq!(expert_only.status, 400);
    let not_json = call(&t.app, put("mode=on", Some(csrf.clone()), "text/plain")).await;
    assert_eq!(not_json.status, 415);
    assert!(not_json.json()["error"].is_string());

    let on = call(
        &t.app,
        put(r#"{"mode":"on"}"#, Some(csrf.clone()), "application/json"),
    )
    .await;
    assert_eq!(on.status, 200, "{}", on.body);
    assert_eq!(on.json()["secure_alias"], "me@secure.example.org");
    let expert = call(
        &t.app,
        put(
            r#"{"mode":"expert","min_level":"dane","min_tls":"1.3"}"#,
            Some(csrf),
            "application/json",
        ),
    )
    .await;
    assert_eq!(expert.status, 200, "{}", expert.body);
    assert_eq!(expert.json()["encrypted_sending"]["min_level"], "dane");
    assert_eq!(expert.json()["encrypted_sending"]["min_tls"], "1.3");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let t = test_app(config()).await;
    let session = sign_in(&t.app).await;
    let csrf = get(&t.app, "/api/v1/settings", Some(&session)).await.json()["csrf_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let body = format!(r#"{{"mode":"on","min_level":"{}"}}"#, "x".repeat(20_000));
    let request = Request::put("/api/v1/settings")
        .header(header::COOKIE, session)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-csrf-token", csrf)
        .body(Body::from(body))
        .expect("request");
    let reply = call(&t.app, request).await;
    assert_eq!(reply.status, 413);
    assert!(reply.json()["error"].is_string());
}

#[tokio::test]
async fn sign_in_needs_the_form_token_and_the_right_password() {
    let t = test_app(config()).await;
    let page = get(&t.app, "/settings", None).await;
    let cookie = cookie_pair(&page, "mailtls_signin");
    let set = page.cookies().join(" | ");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let token = csrf_field(&page.body);
    // No double-submit cookie: a form posted from another site.
    let forged = post_form(
        &t.app,
        "/signin",
        None,
        &format!("csrf={token}&address={USER}&password=x"),
    )
    .await;
    assert_eq!(forged.status, 403);
    let wrong = post_form(
        &t.app,
        "/signin",
        Some(&cookie),
        &format!("csrf={token}&address={USER}&password=wrong"),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong address or password"));
    assert!(
        wrong
            .cookies()
            .iter()
            .all(|c| !c.starts_with("mailtls_session="))
    );
    let session = sign_in(&t.app).await;
    assert!(session.starts_with("mailtls_session="));
}

#[tokio::test]
async fn failed_sign_ins_are_rate_limited() {
    let t = test_app(WebConfig {
        signin_failures_per_minute: 2,
        ..config()
    })
    .await;
    let page = get(&t.app, "/settings", None).await;
    let cookie = cookie_pair(&page, "mailtls_signin");
    let token = csrf_field(&page.body);
    let attempt = |password: &'static str| {
        let form = format!("csrf={token}&address={USER}&password={password}");
        let cookie = cookie.clone();
        let app = t.app.clone();
        async move { post_form(&app, "/signin", Some(&cookie), &form).await }
    };
    assert_eq!(attempt("bad1").await.status, 401);
    assert_eq!(attempt("bad2").await.status, 401);
    let limited = attempt("bad3").await;
    assert_eq!(limited.status, 429);
    assert!(!limited.header("retry-after").is_empty());
    // Even the right password waits: the limit is checked before verifying.
    let form = format!(
        "csrf={token}&address={USER}&password={}",
        form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect::<String>()
    );
    assert_eq!(
        post_form(&t.app, "/signin", Some(&cookie), &form)
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn the_settings_form_switches_encrypted_sending_and_shows_the_alias() {
    let t = test_app(config()).await;
    let session = sign_in(&t.app).await;
    let page = get(&t.app, "/settings", Some(&session)).await;
    assert!(
        page.body
            .contains("Encrypted Sending is <strong>off</strong>")
    );
    assert!(
        page.body
            .contains("their replies to your secure alias will be refused")
    );
    let csrf = csrf_field(&page.body);
    let forged = post_form(&t.app, "/settings", Some(&session), "csrf=nope&mode=on").await;
    assert_eq!(forged.status, 403);
    let saved = post_form(
        &t.app,
        "/settings",
        Some(&session),
        &format!("csrf={csrf}&mode=on&min_level=dane&min_tls=&inbound_min_tls="),
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let page = get(&t.app, "/settings", Some(&session)).await;
    assert!(
        page.body
            .contains("id=\"secure-alias\">me@secure.example.org<"),
        "{}",
        page.body
    );
    let bad = post_form(
        &t.app,
        "/settings",
        Some(&session),
        &format!("csrf={csrf}&mode=expert&min_level=best"),
    )
    .await;
    assert_eq!(bad.status, 400);
    // Sign out ends the session.
    let out = post_form(&t.app, "/signout", Some(&session), &format!("csrf={csrf}")).await;
    assert_eq!(out.status, 303);
    assert_eq!(
        get(&t.app, "/api/v1/settings", Some(&session)).await.status,
        401
    );
}

// SPEC §4: a sender with Encrypted Sending on cannot send to a provider
// known not to encrypt; the server says so per recipient.
#[tokio::test]
async fn a_signed_in_secure_sender_gets_a_sending_verdict_per_recipient() {
    let t = test_app(config()).await;
    learn(&t.store, "tls.example", TlsLevel::Tls).await;
    learn(&t.store, "plain.example", TlsLevel::None).await;
    let session = sign_in(&t.app).await;
    let uri = "/api/v1/check?address=a@tls.example&address=b@plain.example";
    let off = get(&t.app, uri, Some(&session)).await.json();
    assert!(off[1].get("sendable").is_none(), "Encrypted Sending is off");
    let page = get(&t.app, "/settings", Some(&session)).await;
    let csrf = csrf_field(&page.body);
    post_form(
        &t.app,
        "/settings",
        Some(&session),
        &format!("csrf={csrf}&mode=on"),
    )
    .await;
    let on = get(&t.app, uri, Some(&session)).await.json();
    assert_eq!(on[0]["sendable"], true);
    assert_eq!(on[1]["sendable"], false);
    assert!(
        on[1]["blocked_reason"]
            .as_str()
            .is_some_and(|r| r.contains("plain.example")),
        "{}",
        on[1]
    );
    let compose = get(&t.app, "/compose", Some(&session)).await;
    assert!(
        compose
            .body
            .contains("<option selected>me@secure.example.org</option>"),
        "{}",
        compose.body
    );
    assert!(compose.body.contains("data-requirement="));
}

// ---- pages ---------------------------------------------------------------

#[tokio::test]
async fn the_check_page_works_without_javascript() {
    let t = test_app(config()).await;
    learn(&t.store, "known.example", TlsLevel::Dane).await;
    let empty = get(&t.app, "/", None).await;
    assert_eq!(empty.status, 200);
    assert!(empty.content_type().starts_with("text/html"));
    assert!(
        empty
            .body
            .contains("<form class=\"check\" action=\"/\" method=\"get\"")
    );
    assert!(
        !empty.body.contains("<script"),
        "the check page has no script"
    );
    let result = get(&t.app, "/?address=alice%40known.example", None).await;
    assert_eq!(result.status, 200);
    assert!(
        result
            .body
            .contains("role=\"img\" aria-label=\"DANE ok\">👍</span>"),
        "{}",
        result.body
    );
    assert!(
        result
            .body
            .contains("<span class=\"status\">DANE ok</span>")
    );
    assert!(result.body.contains("TLSv1.3"));
    let csp = result.header("content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(result.header("x-content-type-options"), "nosniff");
}

/// The check page probes an unknown domain while it waits, and shows the
/// result (here: the DNS error of the absent resolver) with its state.
#[tokio::test]
async fn the_check_page_waits_for_a_live_probe() {
    let t = test_app(config()).await;
    let page = get(&t.app, "/?address=bob%40unknown.example", None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("a live probe"), "{}", page.body);
    assert!(page.body.contains("sym-problem"), "{}", page.body);
}

// Escaping: nothing typed reaches the page as markup.
#[tokio::test]
async fn typed_markup_is_escaped_everywhere() {
    let t = test_app(config()).await;
    let evil = "\"><script>alert(1)</script><img src=x onerror=alert(2)>@x.example";
    let q: String = form_urlencoded::byte_serialize(evil.as_bytes()).collect();
    let page = get(&t.app, &format!("/?address={q}"), None).await;
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains("<img src=x"), "{}", page.body);
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    let api = get(&t.app, &format!("/api/v1/check?address={q}"), None).await;
    assert!(api.content_type().starts_with("application/json"));
}

#[tokio::test]
async fn compose_and_assets_are_served_from_the_binary() {
    let t = test_app(config()).await;
    let compose = get(&t.app, "/compose", None).await;
    assert_eq!(compose.status, 200);
    assert!(
        compose
            .body
            .contains("<script src=\"/assets/compose.js\" defer></script>")
    );
    assert!(compose.body.contains("id=\"to-input\"") && compose.body.contains("id=\"cc-input\""));
    let js = get(&t.app, "/assets/compose.js", None).await;
    assert_eq!(js.status, 200);
    assert!(js.content_type().starts_with("text/javascript"));
    assert!(
        !js.body.contains("innerHTML"),
        "text only through textContent"
    );
    let css = get(&t.app, "/assets/style.css", None).await;
    assert!(css.content_type().starts_with("text/css"));
}

#[tokio::test]
async fn unknown_paths_are_404_json_under_the_api_and_html_elsewhere() {
    let t = test_app(config()).await;
    let api = get(&t.app, "/api/v1/nothing", None).await;
    assert_eq!(api.status, 404);
    assert!(api.json()["error"].is_string());
    let page = get(&t.app, "/nothing", None).await;
    assert_eq!(page.status, 404);
    assert!(page.content_type().starts_with("text/html"));
}

#[tokio::test]
async fn the_server_binds_serves_and_shuts_down_with_open_streams() {
    let t = test_app(config()).await;
    let server = mailtls_web::serve("127.0.0.1:0".parse().expect("addr"), t.app.clone())
        .await
        .expect("bind");
    let addr = server.addr();
    // An event stream that would stay open for minutes.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(b"GET /api/v1/events?address=z@pending.example HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(6));
}

/// SPEC §7 limits: at most `max_connections` are served at once; the next
/// client waits until one closes.
#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = test_app(WebConfig {
        max_connections: 1,
        ..config()
    })
    .await;
    let server = mailtls_web::serve("127.0.0.1:0".parse().expect("addr"), t.app.clone())
        .await
        .expect("bind");
    let addr = server.addr();
    let holder = tokio::net::TcpStream::connect(addr).await.expect("first");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("second");
        s.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.expect("read");
        String::from_utf8_lossy(&reply).into_owned()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "served beyond the connection limit");
    drop(holder);
    let reply = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("served once the first connection closed")
        .expect("task");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    server.shutdown().await;
}
