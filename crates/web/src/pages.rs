//! The pages (SPEC §5, issue #5) and their embedded assets.
//!
//! * `/` — the check page. Works without JavaScript: a GET form, answered
//!   with the verdict laid out for a person. A domain the memory does not
//!   know is probed while the page waits (up to `page_probe_wait`); if the
//!   probe takes longer the page says `SSL ?` and reloads itself.
//! * `/compose` — a compose-style demo: To/Cc recipients become chips with
//!   their symbol that update live (`assets/compose.js`, talking to the
//!   JSON API). It sends nothing.
//! * `/settings` — sign in with the mail address and password, then switch
//!   Encrypted Sending (SPEC §4) off / on / on with expert settings.
//!
//! Assets are compiled into the binary (`include_str!`): nothing is
//! downloaded at run time and there is no build step.

use std::time::Duration;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use mailtls_core::sending::{EncryptedSending, MinLevel, TlsVersion};
use mailtls_core::{Address, CheckReport, Target};
use mailtls_store::{Settings, Users};
use serde::Deserialize;

use crate::App;
use crate::api::{SettingsChange, store_error};
use crate::html::{Nav, esc, page, report};
use crate::routes::ClientIp;
use crate::session::{
    SESSION_COOKIE, SESSION_LIFETIME, SIGNIN_COOKIE, Session, cookie, random_token, set_cookie,
    tokens_match,
};

const STYLE: &str = include_str!("../assets/style.css");
const COMPOSE_JS: &str = include_str!("../assets/compose.js");

/// `/assets/style.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `/assets/compose.js`.
pub async fn compose_js() -> Response {
    asset("text/javascript; charset=utf-8", COMPOSE_JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The `404` page.
pub fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            Nav::Other,
            None,
            "",
            "<h1>Not found</h1><p>There is no such page. <a href=\"/\">Check an address</a>.</p>",
        ),
    )
}

/// The query of the check page.
#[derive(Debug, Default, Deserialize)]
struct CheckQuery {
    address: Option<String>,
    live: Option<String>,
}

/// `GET /`: the check page.
pub async fn check_page(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let user = app.sessions().from_headers(&headers).map(|s| s.user);
    let mut q = CheckQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match &*key {
            "address" => q.address = Some(value.into_owned()),
            "live" => q.live = Some(value.into_owned()),
            _ => {}
        }
    }
    let typed = q.address.as_deref().map(str::trim).unwrap_or("");
    let form = format!(
        r#"<h1>Will my mail travel encrypted?</h1>
<p>Type a recipient's address to see whether mail to their provider travels encrypted (STARTTLS), and whether the server is authenticated with DANE.</p>
<form class="check" action="/" method="get" role="search">
<label for="address">Recipient address</label>
<input id="address" name="address" type="email" inputmode="email" autocomplete="email" maxlength="320" required value="{}" placeholder="someone@example.org">
<button type="submit">Check</button>
</form>
"#,
        esc(typed)
    );
    if typed.is_empty() {
        return html(
            StatusCode::OK,
            page("Check", Nav::Check, user.as_deref(), "", &form),
        );
    }
    if typed.len() > crate::api::MAX_ADDRESS_BYTES {
        let body = format!(
            "{form}<p class=\"error\" role=\"alert\">That is longer than any mail address.</p>"
        );
        return html(
            StatusCode::BAD_REQUEST,
            page("Check", Nav::Check, user.as_deref(), "", &body),
        );
    }
    if let Err(wait) = app.check_limit().take(ip, 1) {
        let body = format!(
            "{form}<p class=\"error\" role=\"alert\">Too many checks from your address. Try again in {} seconds.</p>",
            wait.as_secs()
        );
        let mut response = html(
            StatusCode::TOO_MANY_REQUESTS,
            page("Check", Nav::Check, user.as_deref(), "", &body),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let live = q.live.is_some();
    let (result, still_probing) = page_report(&app, typed, live).await;
    let mut body = form;
    body.push_str(&report(&result));
    let mut head = String::new();
    if still_probing {
        body.push_str(
            "<p class=\"note\" role=\"status\">The mail servers are being checked now; this page reloads in a few seconds.</p>",
        );
        head.push_str("<meta http-equiv=\"refresh\" content=\"5\">\n");
    } else if result.problem != Some(mailtls_core::Problem::InvalidAddress) {
        let again = format!(
            "/?address={}&live=1",
            form_urlencoded::byte_serialize(typed.as_bytes()).collect::<String>()
        );
        body.push_str(&format!(
            "<p><a href=\"{}\">Check the mail servers again now</a></p>",
            esc(&again)
        ));
    }
    html(
        StatusCode::OK,
        page("Check", Nav::Check, user.as_deref(), &head, &body),
    )
}

/// The report the check page shows, and whether a probe is still running.
async fn page_report(app: &App, typed: &str, live: bool) -> (CheckReport, bool) {
    let wait = app.config().page_probe_wait;
    let target = match Address::parse(typed) {
        Ok(address) => Target::Address(address),
        Err(_) => return (app.answer(typed, None).await.report, false),
    };
    if live {
        return match app.probes().probe_and_wait(&target, wait, true).await {
            Some(report) => (with_address(&report, &target), false),
            None => (app.answer(typed, None).await.report, true),
        };
    }
    let answer = app.answer(typed, None).await;
    if !answer.pending {
        return (answer.report, false);
    }
    match app.probes().probe_and_wait(&target, wait, false).await {
        Some(report) => (with_address(&report, &target), false),
        None => (answer.report, true),
    }
}

fn with_address(report: &CheckReport, target: &Target) -> CheckReport {
    let mut report = report.clone();
    report.address = target.to_string();
    report
}

/// `GET /compose`.
pub async fn compose_page(State(app): State<App>, headers: HeaderMap) -> Response {
    let session = app.sessions().from_headers(&headers);
    let mut from = String::new();
    let mut data = String::new();
    if let Some(session) = &session {
        match app.store().settings(&session.user).await {
            Ok(settings) => {
                let alias = app
                    .config()
                    .secure_domain
                    .as_deref()
                    .and_then(|d| settings.secure_alias(d));
                from.push_str(&format!("<option>{}</option>", esc(&settings.address)));
                if let Some(alias) = &alias {
                    from.push_str(&format!("<option selected>{}</option>", esc(alias)));
                }
                if let Some(requirement) = settings.encrypted_sending.outbound() {
                    data.push_str(&format!(
                        " data-requirement=\"{}\"",
                        esc(&requirement.to_string())
                    ));
                }
            }
            Err(e) => return store_error(&e).into_response(),
        }
    }
    let from_field = if from.is_empty() {
        "<p class=\"note\">Not signed in: recipients are checked, but no sending rule applies. <a href=\"/settings\">Sign in</a> to see your Encrypted Sending rule at work.</p>".to_owned()
    } else {
        format!(
            "<div class=\"field\"><label for=\"from\">From</label><select id=\"from\" name=\"from\">{from}</select></div>"
        )
    };
    let rule = if data.is_empty() {
        String::new()
    } else {
        "<p class=\"note\" id=\"rule\">Encrypted Sending is on: every recipient must be reachable securely, or the message is not sent.</p>".to_owned()
    };
    let body = format!(
        r#"<h1>Compose</h1>
<noscript><p class="error">This demo needs JavaScript to check recipients as you type. Without it, use the <a href="/">check page</a>.</p></noscript>
<p>Type recipients and press Enter, comma or Tab. Each gets its symbol; point at it or focus it with Tab for the details.</p>
<form id="compose" class="compose" action="/compose" method="get" autocomplete="off"{data}>
{from_field}
{rule}
<div class="field"><label for="to-input">To</label><div class="recipients" data-field="to"><span class="chips" role="list" aria-label="To recipients"></span><input id="to-input" type="email" inputmode="email" maxlength="320" placeholder="name@example.org"></div></div>
<div class="field"><label for="cc-input">Cc</label><div class="recipients" data-field="cc"><span class="chips" role="list" aria-label="Cc recipients"></span><input id="cc-input" type="email" inputmode="email" maxlength="320"></div></div>
<div class="field"><label for="subject">Subject</label><input id="subject" type="text" maxlength="200"></div>
<div class="field"><label for="message">Message</label><textarea id="message" rows="6" maxlength="10000"></textarea></div>
<p id="send-status" class="send-status" role="status" aria-live="polite"></p>
<button id="send" type="submit">Send</button>
</form>
<script src="/assets/compose.js" defer></script>
"#
    );
    html(
        StatusCode::OK,
        page(
            "Compose",
            Nav::Compose,
            session.as_ref().map(|s| s.user.as_str()),
            "",
            &body,
        ),
    )
}

/// The explanation a user needs before turning Encrypted Sending on
/// (issue #5).
const EXPLANATION: &str = r#"<section class="explain" aria-labelledby="what">
<h2 id="what">What Encrypted Sending does</h2>
<ul>
<li>Mail you send (from your address or your secure alias) leaves only if every recipient's provider accepts it over an encrypted connection. If one cannot, the message is <strong>not sent at all</strong> and you are told which recipient failed and why.</li>
<li>You get a <strong>secure alias</strong>. Mail to it is accepted only over an encrypted connection; a provider that cannot encrypt gets its mail returned to the sender.</li>
<li>Some providers still cannot receive encrypted mail, and some cannot send it. Mail to them will not go out, and <strong>their replies to your secure alias will be refused</strong>. The compose page marks such recipients before you send.</li>
<li>Expert settings can ask for more: a certificate that is verified (DANE or the Web PKI) or DANE only, and a minimum TLS version. Each makes more providers unreachable.</li>
</ul>
</section>"#;

/// `GET /settings`.
pub async fn settings_page(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.sessions().from_headers(&headers) {
        Some(session) => settings_view(&app, &session, StatusCode::OK, None).await,
        None => signin_view(&app, StatusCode::OK, None),
    }
}

async fn settings_view(
    app: &App,
    session: &Session,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let settings = match app.store().settings(&session.user).await {
        Ok(settings) => settings,
        Err(e) => return store_error(&e).into_response(),
    };
    let setting = settings.encrypted_sending;
    let expert = match setting {
        EncryptedSending::Expert(e) => Some(e),
        _ => None,
    };
    let checked = |mode: &str| {
        if setting.mode() == mode {
            " checked"
        } else {
            ""
        }
    };
    let option = |value: &str, label: &str, selected: bool| {
        format!(
            "<option value=\"{value}\"{}>{label}</option>",
            if selected { " selected" } else { "" }
        )
    };
    let level = expert.map(|e| e.min_level);
    let levels: String = [
        (MinLevel::Tls, "TLS: any encrypted connection"),
        (MinLevel::Verified, "verified: DANE or a valid certificate"),
        (MinLevel::Dane, "DANE only"),
    ]
    .iter()
    .map(|(l, label)| option(l.as_str(), label, level == Some(*l)))
    .collect();
    let versions = |current: Option<TlsVersion>| -> String {
        let mut out = option("", "any", current.is_none());
        for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
            out.push_str(&option(
                v.as_str(),
                &format!("TLS {} or newer", v.as_str()),
                current == Some(v),
            ));
        }
        out
    };
    let state = match (&setting, app.config().secure_domain.as_deref()) {
        (EncryptedSending::Off, _) => {
            "<p id=\"state\">Encrypted Sending is <strong>off</strong>. You have no secure alias.</p>".to_owned()
        }
        (_, domain) => {
            let alias = domain
                .and_then(|d| settings.secure_alias(d))
                .unwrap_or_else(|| "(no secure domain is configured on this server)".to_owned());
            let requirement = setting
                .outbound()
                .map(|r| r.to_string())
                .unwrap_or_default();
            format!(
                "<p id=\"state\">Encrypted Sending is <strong>{}</strong>: your mail needs {}.</p>\n<p>Your secure alias: <strong id=\"secure-alias\">{}</strong></p>",
                esc(setting.mode()),
                esc(&requirement),
                esc(&alias)
            )
        }
    };
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let csrf = esc(&session.csrf);
    let body = format!(
        r#"<h1>Settings</h1>
<p>Signed in as <strong>{user}</strong>.</p>
{error}{state}
{EXPLANATION}
<form class="settings" action="/settings" method="post">
<input type="hidden" name="csrf" value="{csrf}">
<fieldset>
<legend>Encrypted Sending</legend>
<label><input type="radio" name="mode" value="off"{off}> Off</label>
<label><input type="radio" name="mode" value="on"{on}> On: every recipient needs an encrypted connection</label>
<label><input type="radio" name="mode" value="expert"{exp}> On, with expert settings</label>
</fieldset>
<fieldset>
<legend>Expert settings (only with "On, with expert settings")</legend>
<label for="min_level">Minimum level for every recipient</label>
<select id="min_level" name="min_level">{levels}</select>
<label for="min_tls">Minimum TLS version for mail you send</label>
<select id="min_tls" name="min_tls">{min_tls}</select>
<label for="inbound_min_tls">Minimum TLS version for mail to your secure alias</label>
<select id="inbound_min_tls" name="inbound_min_tls">{inbound}</select>
</fieldset>
<button type="submit" id="save">Save</button>
</form>
<form action="/signout" method="post"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Sign out</button></form>
"#,
        user = esc(&settings.address),
        off = checked("off"),
        on = checked("on"),
        exp = checked("expert"),
        min_tls = versions(expert.and_then(|e| e.min_tls)),
        inbound = versions(expert.and_then(|e| e.inbound_min_tls)),
    );
    html(
        status,
        page("Settings", Nav::Settings, Some(&session.user), "", &body),
    )
}

fn signin_view(app: &App, status: StatusCode, error: Option<&str>) -> Response {
    let Some(token) = random_token() else {
        return crate::routes::ApiError::internal(&"no randomness from the OS").into_response();
    };
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Sign in</h1>
<p>Sign in with your mail address and mail password to change your Encrypted Sending setting.</p>
{error}<form class="signin" action="/signin" method="post">
<input type="hidden" name="csrf" value="{token}">
<label for="signin-address">Mail address</label>
<input id="signin-address" name="address" type="email" autocomplete="username" maxlength="320" required>
<label for="signin-password">Password</label>
<input id="signin-password" name="password" type="password" autocomplete="current-password" maxlength="1024" required>
<button type="submit" id="signin">Sign in</button>
</form>
"#
    );
    let mut response = html(status, page("Sign in", Nav::Settings, None, "", &body));
    let cookie = set_cookie(
        SIGNIN_COOKIE,
        &token,
        Duration::from_secs(3600),
        app.config().secure_cookies,
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignIn {
    address: String,
    password: String,
    csrf: String,
}

/// `POST /signin`.
pub async fn signin(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return signin_view(
            &app,
            StatusCode::BAD_REQUEST,
            Some("The form was incomplete."),
        );
    };
    let expected = cookie(&headers, SIGNIN_COOKIE).unwrap_or("");
    if !tokens_match(&form.csrf, expected) {
        return signin_view(
            &app,
            StatusCode::FORBIDDEN,
            Some("The form expired or came from another site. Please try again."),
        );
    }
    if let Err(wait) = app.signin_limit().check(ip) {
        let mut response = signin_view(
            &app,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed sign-ins from your address. Try again in {} seconds.",
                wait.as_secs()
            )),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let verified = app
        .store()
        .verify_password(form.address.trim(), &form.password)
        .await;
    let user = match (verified, Address::parse(form.address.trim())) {
        (Ok(true), Ok(address)) => address.to_string(),
        (Ok(_), _) => {
            let _ = app.signin_limit().take(ip, 1);
            return signin_view(
                &app,
                StatusCode::UNAUTHORIZED,
                Some("Wrong address or password."),
            );
        }
        (Err(e), _) => return store_error(&e).into_response(),
    };
    let Some((token, _)) = app.sessions().create(&user) else {
        return crate::routes::ApiError::internal(&"no randomness from the OS").into_response();
    };
    let secure = app.config().secure_cookies;
    let mut response = see_other("/settings");
    for c in [
        set_cookie(SESSION_COOKIE, &token, SESSION_LIFETIME, secure),
        set_cookie(SIGNIN_COOKIE, "", Duration::ZERO, secure),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// The settings form.
#[derive(Debug, Deserialize)]
pub struct SettingsForm {
    csrf: String,
    mode: String,
    #[serde(default)]
    min_level: Option<String>,
    #[serde(default)]
    min_tls: Option<String>,
    #[serde(default)]
    inbound_min_tls: Option<String>,
}

/// `POST /settings`.
pub async fn settings_form(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<SettingsForm>, FormRejection>,
) -> Response {
    let Some(session) = app.sessions().from_headers(&headers) else {
        return signin_view(
            &app,
            StatusCode::UNAUTHORIZED,
            Some("Please sign in first."),
        );
    };
    let Ok(Form(form)) = form else {
        return settings_view(
            &app,
            &session,
            StatusCode::BAD_REQUEST,
            Some("The form was incomplete."),
        )
        .await;
    };
    if !tokens_match(&form.csrf, &session.csrf) {
        return settings_view(
            &app,
            &session,
            StatusCode::FORBIDDEN,
            Some("The form expired or came from another site. Please try again."),
        )
        .await;
    }
    // The expert fields are always in the form; they count only in expert mode.
    let expert = form.mode == "expert";
    let change = SettingsChange {
        mode: form.mode,
        min_level: form.min_level.filter(|_| expert),
        min_tls: form.min_tls.filter(|_| expert),
        inbound_min_tls: form.inbound_min_tls.filter(|_| expert),
    };
    let setting = match change.setting() {
        Ok(setting) => setting,
        Err(e) => return settings_view(&app, &session, StatusCode::BAD_REQUEST, Some(&e)).await,
    };
    match app
        .store()
        .set_encrypted_sending(&session.user, setting)
        .await
    {
        Ok(_) => see_other("/settings"),
        Err(mailtls_store::StoreError::AliasTaken(local)) => {
            let message =
                format!("The secure alias '{local}' belongs to another user; ask your operator.");
            settings_view(&app, &session, StatusCode::CONFLICT, Some(&message)).await
        }
        Err(e) => store_error(&e).into_response(),
    }
}

/// The sign-out form.
#[derive(Debug, Deserialize)]
pub struct SignOut {
    csrf: String,
}

/// `POST /signout`.
pub async fn signout(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<SignOut>, FormRejection>,
) -> Response {
    let mut response = see_other("/settings");
    if let (Some(session), Ok(Form(form))) = (app.sessions().from_headers(&headers), form)
        && tokens_match(&form.csrf, &session.csrf)
    {
        app.sessions().remove(&headers);
        let c = set_cookie(
            SESSION_COOKIE,
            "",
            Duration::ZERO,
            app.config().secure_cookies,
        );
        if let Ok(v) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

fn see_other(location: &'static str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static(location))],
    )
        .into_response()
}
