//! The handlers against `openapi.json` (issue #5: "a test checks the
//! handlers against it").
//!
//! For each documented path and method, requests that should produce each
//! of several documented outcomes are sent through the router; the test
//! asserts that the status is documented for that operation, that the
//! content type is the documented one, and that the JSON body validates
//! against the documented schema (types, `required`, `enum`, `nullable`,
//! nested objects and arrays, `$ref`s). It also asserts that every
//! documented operation was exercised, and that the document served at
//! `/api/v1/openapi.json` is the file in the repository.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, header};
use common::*;
use mailtls_core::TlsLevel;
use mailtls_web::WebConfig;
use serde_json::Value;

const DOC: &str = include_str!("../openapi.json");

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let path = r.trim_start_matches("#/");
            let target = path.split('/').fold(doc, |node, part| &node[part]);
            assert!(!target.is_null(), "dangling $ref {r}");
            resolve(doc, target)
        }
        None => v,
    }
}

/// Validates `value` against `schema`; the errors, with their JSON paths.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() {
        if schema["nullable"] != true && schema.get("type").is_some() {
            errors.push(format!("{at}: null but not nullable"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} not in {allowed:?}"));
    }
    let ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{at}: {value} is not {}", schema["type"]));
        return;
    }
    if let Some(required) = schema["required"].as_array() {
        for field in required.iter().filter_map(Value::as_str) {
            if value.get(field).is_none() {
                errors.push(format!("{at}: required field '{field}' missing"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
        for (name, sub) in props {
            if let Some(v) = obj.get(name) {
                validate(doc, sub, v, &format!("{at}.{name}"), errors);
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            validate(doc, items, v, &format!("{at}[{i}]"), errors);
        }
    }
}

/// Checks one reply against the operation's documented responses.
fn conforms(doc: &Value, path: &str, method: &str, reply: &Reply) {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let documented = &op["responses"][reply.status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {path} answered {} which is not documented: {}",
        reply.status,
        reply.body
    );
    let documented = resolve(doc, documented);
    let content = documented["content"]
        .as_object()
        .expect("every response documents its content");
    let media = reply
        .content_type()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let schema = content.get(&media).unwrap_or_else(|| {
        panic!(
            "{method} {path} {}: content type {media} not documented",
            reply.status
        )
    });
    if media == "application/json" {
        let body: Value = serde_json::from_str(&reply.body).expect("JSON body");
        let mut errors = Vec::new();
        validate(doc, &schema["schema"], &body, "$", &mut errors);
        assert!(
            errors.is_empty(),
            "{method} {path} {}: {errors:#?}\n{}",
            reply.status,
            reply.body
        );
    }
    if reply.status == 429 {
        assert!(
            !reply.header("retry-after").is_empty(),
            "429 documents Retry-After"
        );
    }
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let doc: Value = serde_json::from_str(DOC).expect("openapi.json is JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let t = test_app(WebConfig {
        check_rate_per_minute: 8,
        ..config()
    })
    .await;
    learn(&t.store, "known.example", TlsLevel::Tls).await;
    learn(&t.store, "plain.example", TlsLevel::None).await;
    let session = sign_in(&t.app).await;
    let mut exercised = BTreeSet::new();
    let mut check = |path: &str, method: &str, reply: &Reply| {
        conforms(&doc, path, method, reply);
        exercised.insert((path.to_owned(), method.to_owned(), reply.status));
    };

    // /api/v1/check: 200 (memory, unknown, invalid, signed-in verdicts), 400, 414, 429.
    let r = get(
        &t.app,
        "/api/v1/check?address=a@known.example&address=b@fresh.example&address=bad",
        None,
    )
    .await;
    check("/api/v1/check", "get", &r);
    let r = get(
        &t.app,
        "/api/v1/check?address=a@known.example&address=c@plain.example",
        Some(&session),
    )
    .await;
    check("/api/v1/check", "get", &r);
    let r = get(&t.app, "/api/v1/check?nope=1", None).await;
    check("/api/v1/check", "get", &r);
    let r = get(
        &t.app,
        &format!("/api/v1/check?address={}", "a".repeat(5000)),
        None,
    )
    .await;
    check("/api/v1/check", "get", &r);

    // /api/v1/events: 200, 400.
    let r = get(&t.app, "/api/v1/events?address=a@known.example", None).await;
    check("/api/v1/events", "get", &r);
    let r = get(&t.app, "/api/v1/events", None).await;
    check("/api/v1/events", "get", &r);
    // Exhaust the limit: 429 on both.
    for _ in 0..8 {
        let _ = get(&t.app, "/api/v1/check?address=a@known.example", None).await;
    }
    let r = get(&t.app, "/api/v1/check?address=a@known.example", None).await;
    assert_eq!(r.status, 429);
    check("/api/v1/check", "get", &r);
    let r = get(&t.app, "/api/v1/events?address=a@known.example", None).await;
    check("/api/v1/events", "get", &r);

    // /api/v1/settings.
    let r = get(&t.app, "/api/v1/settings", None).await;
    check("/api/v1/settings", "get", &r);
    let r = get(&t.app, "/api/v1/settings", Some(&session)).await;
    check("/api/v1/settings", "get", &r);
    let csrf = r.json()["csrf_token"].as_str().expect("token").to_owned();
    let put = |body: String, token: &str, ct: &str| {
        Request::put("/api/v1/settings")
            .header(header::COOKIE, session.clone())
            .header(header::CONTENT_TYPE, ct)
            .header("x-csrf-token", token)
            .body(Body::from(body))
            .expect("request")
    };
    for (body, token, ct) in [
        (
            r#"{"mode":"expert","min_level":"verified","inbound_min_tls":"1.2"}"#.to_owned(),
            csrf.as_str(),
            "application/json",
        ),
        (
            r#"{"mode":"on"}"#.to_owned(),
            csrf.as_str(),
            "application/json",
        ),
        (
            r#"{"mode":"maybe"}"#.to_owned(),
            csrf.as_str(),
            "application/json",
        ),
        (r#"{"mode":"on"}"#.to_owned(), "wrong", "application/json"),
        (r#"{"mode":"on"}"#.to_owned(), csrf.as_str(), "text/plain"),
        (
            r#"{"mood":"on"}"#.to_owned(),
            csrf.as_str(),
            "application/json",
        ),
        (
            format!(r#"{{"mode":"{}"}}"#, "x".repeat(20_000)),
            csrf.as_str(),
            "application/json",
        ),
    ] {
        let r = call(&t.app, put(body, token, ct)).await;
        check("/api/v1/settings", "put", &r);
    }
    let r = call(
        &t.app,
        Request::put("/api/v1/settings")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"mode":"on"}"#))
            .expect("request"),
    )
    .await;
    check("/api/v1/settings", "put", &r);

    // /api/v1/health: 200 now; 503 once the store is gone (at the end).
    let r = get(&t.app, "/api/v1/health", None).await;
    check("/api/v1/health", "get", &r);

    // The document itself, as served, is the file.
    let r = get(&t.app, "/api/v1/openapi.json", None).await;
    check("/api/v1/openapi.json", "get", &r);
    assert_eq!(r.body, DOC);

    t.store.close().await;
    let r = get(&t.app, "/api/v1/health", None).await;
    check("/api/v1/health", "get", &r);

    // Every documented operation was exercised, with each of these statuses.
    let statuses = |path: &str, method: &str| -> BTreeSet<u16> {
        exercised
            .iter()
            .filter(|(p, m, _)| p == path && m == method)
            .map(|(_, _, s)| *s)
            .collect()
    };
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        for method in methods.as_object().expect("operations").keys() {
            assert!(
                !statuses(path, method).is_empty(),
                "{method} {path} is documented but not exercised"
            );
        }
    }
    assert_eq!(
        statuses("/api/v1/check", "get"),
        BTreeSet::from([200, 400, 414, 429])
    );
    assert_eq!(
        statuses("/api/v1/events", "get"),
        BTreeSet::from([200, 400, 429])
    );
    assert_eq!(
        statuses("/api/v1/settings", "get"),
        BTreeSet::from([200, 401])
    );
    assert_eq!(
        statuses("/api/v1/settings", "put"),
        BTreeSet::from([200, 400, 401, 403, 413, 415, 422])
    );
    assert_eq!(
        statuses("/api/v1/health", "get"),
        BTreeSet::from([200, 503])
    );
}

/// Methods the document does not list are not served either.
#[tokio::test]
async fn undocumented_methods_are_refused() {
    let t = test_app(config()).await;
    for (method, path) in [
        ("DELETE", "/api/v1/check"),
        ("POST", "/api/v1/settings"),
        ("PUT", "/api/v1/events"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let r = call(&t.app, request).await;
        assert_eq!(r.status, 405, "{method} {path}");
    }
}
