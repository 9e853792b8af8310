//! The pages in a real browser (issue #5): Debian's chromium, driven by
//! playwright-core under node (`tests/browser/compose.mjs`), against the
//! web server running in this process with a real checker and store, and
//! a local DNSSEC-signed world with real STARTTLS servers on loopback:
//!
//! * `dane.example` — signed, TLSA DANE-EE for its MX: `DANE ok`;
//! * `tls.example` — STARTTLS with a self-signed certificate: `SSL ok`;
//! * `plain.example` — no STARTTLS: `no SSL`;
//! * `slow.example` — STARTTLS behind a proxy that waits 3 s before the
//!   server speaks, so its chip visibly starts as `SSL ?`.
//!
//! Nothing is learned beforehand: every chip's answer comes from a
//! background probe. Screenshots go to `target/browser-artifacts/`.
//! Missing chromium or node fails the test (never skips): run
//! `.ci/install-deps`.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mailtls_check::{CheckConfig, Checker};
use mailtls_dns::{DnsConfig, DnsMode};
use mailtls_e2e::dns_world::{DnsWorld, Signing};
use mailtls_e2e::pki;
use mailtls_e2e::smtp_world::{Behaviour, RunningServer, SmtpServer, fresh_loopback_ip};
use mailtls_smtp::ProbeConfig;
use mailtls_store::{SqlStore, Users};
use mailtls_web::{App, WebConfig};
use tokio::net::{TcpListener, TcpStream};

type TestResult = Result<(), Box<dyn Error>>;

const CHROMIUM: &str = "/usr/bin/chromium";
const USER: &str = "me@example.org";
const PASSWORD: &str = "browser test password";
const SECURE_DOMAIN: &str = "secure.example.org";

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("the SMTP test world uses IPv4 loopback"),
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A TCP proxy on a fresh loopback address, port 25, that waits `delay`
/// before connecting each client to `upstream`: a slow MX.
async fn slow_proxy(upstream: SocketAddr, delay: Duration) -> Result<IpAddr, Box<dyn Error>> {
    let mut last = None;
    for _ in 0..32 {
        let ip = fresh_loopback_ip();
        match TcpListener::bind(SocketAddr::new(ip, 25)).await {
            Ok(listener) => {
                tokio::spawn(async move {
                    while let Ok((mut client, _)) = listener.accept().await {
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            if let Ok(mut server) = TcpStream::connect(upstream).await {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                });
                return Ok(ip);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(format!("no free loopback address for the slow MX: {last:?}").into())
}

fn require_tools() -> Result<PathBuf, Box<dyn Error>> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push("chromium (Debian packages chromium, chromium-driver)");
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("node (Debian packages nodejs, npm)");
    }
    if !missing.is_empty() {
        return Err(format!(
            "the browser test needs {}: run .ci/install-deps as root",
            missing.join(" and ")
        )
        .into());
    }
    let dir = workspace().join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("npm ci in {}: {e} (run .ci/install-deps)", dir.display()))?;
        if !status.success() {
            return Err(format!("npm ci in {} failed: {status}", dir.display()).into());
        }
    }
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_chips_update_live_and_encrypted_sending_blocks_no_ssl() -> TestResult {
    let driver_dir = require_tools()?;

    // The world.
    let mut dns = DnsWorld::new();
    let mut servers: Vec<RunningServer> = Vec::new();

    let dane_cred = pki::self_signed("mx.dane.example");
    let dane = SmtpServer::start_on_fresh_ip(Behaviour::starttls(&dane_cred))?;
    let tlsa = pki::dane_ee(&dane_cred);
    dns.zone("dane.example.", Signing::Signed)
        .mx(10, "mx.dane.example.")
        .a("mx.dane.example.", v4(dane.ip()))
        .tlsa(
            "_25._tcp.mx.dane.example.",
            tlsa.usage,
            tlsa.selector,
            tlsa.matching,
            &tlsa.data,
        );
    servers.push(dane);

    let tls =
        SmtpServer::start_on_fresh_ip(Behaviour::starttls(&pki::self_signed("mx.tls.example")))?;
    dns.zone("tls.example.", Signing::Signed)
        .mx(10, "mx.tls.example.")
        .a("mx.tls.example.", v4(tls.ip()));

    let plain = SmtpServer::start_on_fresh_ip(Behaviour::NoStarttls)?;
    dns.zone("plain.example.", Signing::Signed)
        .mx(10, "mx.plain.example.")
        .a("mx.plain.example.", v4(plain.ip()));
    servers.push(plain);

    let slow_ip = slow_proxy(tls.addr(), Duration::from_secs(3)).await?;
    dns.zone("slow.example.", Signing::Signed)
        .mx(10, "mx.slow.example.")
        .a("mx.slow.example.", v4(slow_ip));
    servers.push(tls);
    let world = dns.start().await?;

    // The web server: a real checker (loopback allowed, as the operator
    // of a test world would) and a fresh store with one user.
    let checker = Checker::new(&CheckConfig {
        dns: DnsConfig {
            resolver: Some(world.addr()),
            mode: DnsMode::Validate,
            trust_anchor: Some(world.trust_anchor_path()),
            timeout: Duration::from_secs(5),
        },
        probe: ProbeConfig {
            helo_name: "web-browser-test.example".into(),
            timeout: Duration::from_secs(15),
            port: 25,
            allow_private: true,
        },
    })?;
    let data = tempfile::tempdir()?;
    let store = SqlStore::open_sqlite(&data.path().join("web.sqlite")).await?;
    store.add_user(USER, PASSWORD).await?;
    let app = App::new(
        checker,
        store.clone(),
        WebConfig {
            secure_domain: Some(SECURE_DOMAIN.into()),
            ..WebConfig::default()
        },
    );
    let server = mailtls_web::serve("127.0.0.1:0".parse()?, app).await?;
    let base = format!("http://{}", server.addr());

    let artifacts = workspace().join("target/browser-artifacts");
    // Only this run's screenshots.
    let _ = std::fs::remove_dir_all(&artifacts);
    let alias = format!("me@{SECURE_DOMAIN}");
    let run = tokio::task::spawn_blocking({
        let artifacts = artifacts.clone();
        move || {
            Command::new("node")
                .arg("compose.mjs")
                .args([
                    base.as_str(),
                    &artifacts.to_string_lossy(),
                    USER,
                    PASSWORD,
                    &alias,
                ])
                .current_dir(&driver_dir)
                .output()
        }
    });
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .map_err(|_| "the browser scenario took longer than 180 s")???;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    server.shutdown().await;
    store.close().await;
    drop(servers);
    assert!(
        output.status.success(),
        "the browser scenario failed ({}); screenshots in {}:\n{stdout}\n{stderr}",
        output.status,
        artifacts.display()
    );
    assert!(stdout.contains("browser scenario: PASSED"), "{stdout}");
    Ok(())
}
