//! Fleets (issue #6, SPEC §6): two `mailtls serve` nodes, each with its own
//! data directory and listeners, on ONE PostgreSQL database.
//!
//! What is proven:
//!
//! * SPEC §3 across nodes: node A delivers to a STARTTLS MX and learns that
//!   it does TLS; then an attacker strips STARTTLS; node B, which never
//!   talked to that MX, refuses to send there in plaintext (`4.7.4`) and
//!   the alert is raised in the shared memory.
//! * SPEC §4 across nodes: a user's Encrypted Sending change made through
//!   node A's CLI is enforced by node B's MX at once (no restart).
//! * Queue ownership: node B's message (its body is in B's spool) is never
//!   touched by node A; after `kill -9` of node B it waits, and the
//!   restarted node B delivers it.
//!
//! PostgreSQL comes from `MAILTLS_TEST_POSTGRES_URL` (`scripts/test` starts
//! a throwaway cluster and sets it); each test creates its own database
//! with `psql`. Without the variable the test prints a visible SKIPPED line,
//! and fails instead when `MAILTLS_TEST_REQUIRE_POSTGRES=1` (as in CI).

mod common;

use common::*;

/// A fresh database on the test server, its URL; `None` (after saying so)
/// when no server is configured and none is required.
fn fleet_database(test: &str) -> Result<Option<String>, Box<dyn Error>> {
    let Ok(server) = std::env::var("MAILTLS_TEST_POSTGRES_URL") else {
        if std::env::var("MAILTLS_TEST_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            return Err("MAILTLS_TEST_POSTGRES_URL is not set, and PostgreSQL is required".into());
        }
        eprintln!("SKIPPED (PostgreSQL): MAILTLS_TEST_POSTGRES_URL is not set — {test}");
        return Ok(None);
    };
    let name = format!("mailtls_fleet_{}_{}", test, std::process::id());
    let output = Command::new("psql")
        .args([&server, "-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .map_err(|e| format!("psql must be installed (Debian package postgresql-client): {e}"))?;
    if !output.status.success() {
        return Err(format!("CREATE DATABASE: {}", transcript(&output)).into());
    }
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    Ok(Some(format!("{base}/{name}")))
}

fn store_section(url: &str, node: &str) -> String {
    format!("\n[store]\nurl = \"{url}\"\nnode = \"{node}\"\n")
}

/// The queue entry state of `address` in message `id`, as a node sees it.
async fn state_of(node: &Mailtls, id: &str, to: &str) -> Result<Value, Box<dyn Error>> {
    node.recipient(id, to).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_memory_the_settings_and_keep_their_own_messages() -> TestResult {
    let Some(url) = fleet_database("two_nodes")? else {
        return Ok(());
    };
    let cred = pki::self_signed("mx.fleet.example");
    let server = start(Behaviour::accept_mail(&cred))?;
    let proxy = StrippingProxy::start(server.addr())?;
    proxy.set_stripping(false);
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "fleet.example", proxy.ip());
    let world = dns.start().await?;
    let mut a = Mailtls::install_in(&world, "node-a", &store_section(&url, "node-a"), true).await?;
    let mut b =
        Mailtls::install_in(&world, "node-b", &store_section(&url, "node-b"), false).await?;
    a.serve().await?;
    b.serve().await?;
    let to = "dave@fleet.example";

    // Node A learns that the MX does TLS.
    let first = a.submit(false, to, "fleet-1@sender.example").await?;
    let received = a.received(&server, 1).await?;
    assert!(received[0].tls);
    a.eventually("node A's delivery recorded", DELIVERY, async || {
        let r = state_of(&a, &first, to).await?;
        Ok(if r["state"] == "delivered" {
            Poll::Ready(())
        } else {
            Poll::Pending(r.to_string())
        })
    })
    .await?;
    // Node B sees it in the shared memory.
    let memory = b.cli(&["memory", "show", "fleet.example"]).await?;
    assert!(memory.contains("best SSL ok"), "{memory}");

    // STARTTLS is stripped; node B never talked to this MX, and still
    // refuses plaintext.
    proxy.set_stripping(true);
    let second = b.submit(false, to, "fleet-2@sender.example").await?;
    let held = b
        .eventually("node B defers with 4.7.4", DELIVERY, async || {
            let r = state_of(&b, &second, to).await?;
            Ok(if r["last_status"] == "451 4.7.4" {
                Poll::Ready(r)
            } else {
                Poll::Pending(r.to_string())
            })
        })
        .await?;
    assert_eq!(held["state"], "pending", "{held}");
    assert_eq!(server.received().len(), 1, "nothing in plaintext");
    let alerts = a.cli(&["memory", "alerts"]).await?;
    assert!(
        alerts.contains("fleet.example"),
        "node A sees node B's alert: {alerts}"
    );

    // A setting changed through node A holds on node B at once.
    let added = a
        .run(&["user", "add", "me@example.org"], Some("pw-me\n".into()))
        .await?;
    assert!(added.status.success(), "{}", transcript(&added));
    a.cli(&[
        "settings",
        "set",
        "me@example.org",
        "encrypted-sending",
        "on",
    ])
    .await?;
    let plain = b
        .swaks_mx(
            false,
            &[
                "--from",
                "x@elsewhere.example",
                "--to",
                "me@secure.example.org",
            ],
        )
        .await?;
    let text = transcript(&plain);
    assert!(
        !plain.status.success() && text.contains("550 5.7.10"),
        "{text}"
    );
    a.cli(&[
        "settings",
        "set",
        "me@example.org",
        "encrypted-sending",
        "off",
    ])
    .await?;
    let gone = b
        .swaks_mx(
            true,
            &[
                "--from",
                "x@elsewhere.example",
                "--to",
                "me@secure.example.org",
            ],
        )
        .await?;
    let text = transcript(&gone);
    assert!(
        !gone.status.success() && text.contains("550 5.1.1"),
        "{text}"
    );

    // Node B's message is node B's: kill node B; the path is clean again
    // and the message due, and node A's runner claims (for a message of
    // its own) — but never node B's, whose body is in B's spool.
    b.kill9()?;
    proxy.set_stripping(false);
    a.cli(&["queue", "retry", &second]).await?;
    a.submit(false, to, "fleet-3@sender.example").await?;
    let received = a.received(&server, 2).await?;
    assert_eq!(
        header(&received[1], "Message-Id").as_deref(),
        Some("<fleet-3@sender.example>")
    );
    let waiting = state_of(&a, &second, to).await?;
    assert_eq!(waiting["state"], "pending", "{waiting}");
    assert!(
        !a.log_text().contains(&second),
        "node A never handled {second}"
    );
    // The restarted node B delivers it.
    b.serve().await?;
    let received = b.received(&server, 3).await?;
    assert_eq!(
        header(&received[2], "Message-Id").as_deref(),
        Some("<fleet-2@sender.example>")
    );
    assert!(received[2].tls, "delivered over TLS");
    Ok(())
}
