//! `mailtls check` end to end: the real binary against a DNSSEC-signed world
//! (private root on hickory-server; Debian's unbound for `trust-ad`) and
//! real STARTTLS servers on loopback addresses, port 25.
//!
//! Every case of issue #2 is one domain of the world; both DNS modes must
//! give the same verdicts. The expectations are grouped by the rule they
//! pin (RFC 7672 for DANE, RFC 4035 for DNSSEC, RFC 5321 §5.1 / RFC 7505
//! for MX, RFC 7435 / RFC 3207 for opportunistic STARTTLS).

use std::error::Error;
use std::net::IpAddr;
use std::process::Output;

use mailtls_e2e::dns_world::{DnsWorld, RecordType, RunningWorld, Signing};
use mailtls_e2e::pki::{self, TestCa};
use mailtls_e2e::smtp_world::{Behaviour, RunningServer, SmtpServer, fresh_loopback_ip};
use serde_json::Value;

type TestResult = Result<(), Box<dyn Error>>;

/// The world: DNS, the SMTP servers (kept alive), and what each address must
/// come back as.
struct World {
    dns: RunningWorld,
    _servers: Vec<RunningServer>,
    cases: Vec<Case>,
}

/// One address and its expected verdict.
struct Case {
    address: &'static str,
    level: &'static str,
    problem: Option<&'static str>,
    /// Extra assertions on the report object.
    also: fn(&Value, Mode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Validate,
    TrustAd,
}

fn nothing(_: &Value, _: Mode) {}

fn mx0(report: &Value) -> &Value {
    &report["mx"][0]
}

fn tlsa(zone: &mut mailtls_e2e::dns_world::Zone, owner: &str, record: &mailtls_core::TlsaRecord) {
    zone.tlsa(
        owner,
        record.usage,
        record.selector,
        record.matching,
        &record.data,
    );
}

fn start(behaviour: Behaviour) -> Result<RunningServer, Box<dyn Error>> {
    Ok(SmtpServer::start_on_fresh_ip(behaviour)?)
}

fn v4(ip: IpAddr) -> std::net::Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("the SMTP test world uses IPv4 loopback"),
    }
}

async fn build() -> Result<World, Box<dyn Error>> {
    let mut dns = DnsWorld::new();
    let mut servers = Vec::new();
    let mut cases = Vec::new();

    // A plain, modern STARTTLS server several domains share.
    let shared_cred = pki::self_signed("mx.shared.example");
    let shared = start(Behaviour::starttls(&shared_cred))?;
    let shared_ip = v4(shared.ip());

    // --- RFC 7672 §3.1.1: DANE-EE(3) ignores names and dates ---------------
    let ee_cred = pki::self_signed("mx.dane-ee.example");
    let ee = start(Behaviour::starttls(&ee_cred))?;
    let z = dns.zone("dane-ee.example.", Signing::Signed);
    z.mx(10, "mx.dane-ee.example.")
        .a("mx.dane-ee.example.", v4(ee.ip()));
    tlsa(z, "_25._tcp.mx.dane-ee.example.", &pki::dane_ee(&ee_cred));
    cases.push(Case {
        address: "alice@dane-ee.example",
        level: "dane",
        problem: None,
        also: |r, _| {
            assert_eq!(mx0(r)["dane"], "ok");
            assert_eq!(mx0(r)["tlsa"][0]["matched"], true);
            assert_eq!(mx0(r)["dnssec"], "secure");
            assert_eq!(mx0(r)["pkix_valid"], false);
            assert_eq!(mx0(r)["certificate"]["subject"], "CN=mx.dane-ee.example");
        },
    });
    servers.push(ee);

    let expired_cred = pki::expired_misnamed();
    let expired = start(Behaviour::starttls(&expired_cred))?;
    let z = dns.zone("dane-expired.example.", Signing::Signed);
    z.mx(10, "mx.dane-expired.example.")
        .a("mx.dane-expired.example.", v4(expired.ip()));
    tlsa(
        z,
        "_25._tcp.mx.dane-expired.example.",
        &pki::dane_ee(&expired_cred),
    );
    cases.push(Case {
        address: "bob@dane-expired.example",
        level: "dane",
        problem: None,
        also: nothing,
    });
    servers.push(expired);

    // --- RFC 7672 §3.1.2: DANE-TA(2) builds the chain and checks the name ---
    let ca = TestCa::new("mailtls test TA");
    let ta = start(Behaviour::starttls(&ca.issue("mx.dane-ta.example")))?;
    let z = dns.zone("dane-ta.example.", Signing::Signed);
    z.mx(10, "mx.dane-ta.example.")
        .a("mx.dane-ta.example.", v4(ta.ip()));
    tlsa(z, "_25._tcp.mx.dane-ta.example.", &pki::dane_ta(&ca));
    cases.push(Case {
        address: "carol@dane-ta.example",
        level: "dane",
        problem: None,
        also: |r, _| {
            assert_eq!(mx0(r)["dane"], "ok");
        },
    });
    servers.push(ta);

    let wrong = start(Behaviour::starttls(&ca.issue("somewhere-else.example")))?;
    let z = dns.zone("dane-ta-wrongname.example.", Signing::Signed);
    z.mx(10, "mx.dane-ta-wrongname.example.")
        .a("mx.dane-ta-wrongname.example.", v4(wrong.ip()));
    tlsa(
        z,
        "_25._tcp.mx.dane-ta-wrongname.example.",
        &pki::dane_ta(&ca),
    );
    cases.push(Case {
        address: "dave@dane-ta-wrongname.example",
        level: "unknown",
        problem: Some("dane_mismatch"),
        also: |r, _| {
            assert_eq!(mx0(r)["dane"], "mismatch");
            assert_eq!(
                mx0(r)["tls_version"],
                "TLSv1.3",
                "the handshake completes so the details can be shown"
            );
        },
    });
    servers.push(wrong);

    // --- RFC 7672 §2.2: a secure, usable RRset must match -------------------
    let z = dns.zone("tlsa-mismatch.example.", Signing::Signed);
    z.mx(10, "mx.tlsa-mismatch.example.")
        .a("mx.tlsa-mismatch.example.", shared_ip);
    z.tlsa("_25._tcp.mx.tlsa-mismatch.example.", 3, 1, 1, &[0x42; 32]);
    cases.push(Case {
        address: "erin@tlsa-mismatch.example",
        level: "unknown",
        problem: Some("dane_mismatch"),
        also: |r, _| {
            assert_eq!(mx0(r)["tlsa"][0]["matched"], false);
        },
    });

    // --- RFC 7672 §2.2: TLSA in an unsigned zone is ignored -----------------
    let z = dns.zone("unsigned-tlsa.example.", Signing::Unsigned);
    z.mx(10, "mx.unsigned-tlsa.example.")
        .a("mx.unsigned-tlsa.example.", shared_ip);
    z.tlsa("_25._tcp.mx.unsigned-tlsa.example.", 3, 1, 1, &[0x42; 32]);
    cases.push(Case {
        address: "frank@unsigned-tlsa.example",
        level: "tls",
        problem: None,
        also: |r, _| {
            assert_eq!(mx0(r)["dane"], "none");
            assert_eq!(mx0(r)["dnssec"], "insecure");
        },
    });

    // --- RFC 7672 §3.1.3: PKIX usages are unusable; TLS still mandatory -----
    let z = dns.zone("pkix-only.example.", Signing::Signed);
    z.mx(10, "mx.pkix-only.example.")
        .a("mx.pkix-only.example.", shared_ip);
    tlsa(
        z,
        "_25._tcp.mx.pkix-only.example.",
        &pki::tlsa_record(1, 1, 1, shared_cred.leaf()),
    );
    cases.push(Case {
        address: "grace@pkix-only.example",
        level: "tls",
        problem: None,
        also: |r, _| {
            assert_eq!(mx0(r)["dane"], "unusable");
            assert_eq!(mx0(r)["tlsa"][0]["usable"], false);
        },
    });

    // --- RFC 4035 §5.5: bogus answers hold mail -----------------------------
    let z = dns.zone("bogus.example.", Signing::Bogus);
    z.mx(10, "mx.bogus.example.")
        .a("mx.bogus.example.", shared_ip);
    cases.push(Case {
        address: "heidi@bogus.example",
        level: "unknown",
        problem: Some("dnssec_bogus"),
        also: nothing,
    });

    // --- RFC 7672 §2.2.2: a TLSA look-up that fails defers, never downgrades
    let z = dns.zone("tlsa-servfail.example.", Signing::Signed);
    z.mx(10, "mx.tlsa-servfail.example.")
        .a("mx.tlsa-servfail.example.", shared_ip);
    z.tlsa(
        "_25._tcp.mx.tlsa-servfail.example.",
        3,
        1,
        1,
        &pki::spki_sha256(shared_cred.leaf()),
    );
    z.tamper("_25._tcp.mx.tlsa-servfail.example.", RecordType::TLSA);
    cases.push(Case {
        address: "ivan@tlsa-servfail.example",
        level: "unknown",
        problem: Some("tlsa_lookup_failed"),
        also: nothing,
    });

    // --- RFC 4035 §3.1.3: a secure denial of TLSA means no DANE -------------
    let z = dns.zone("no-tlsa.example.", Signing::Signed);
    z.mx(10, "mx.no-tlsa.example.")
        .a("mx.no-tlsa.example.", shared_ip);
    cases.push(Case {
        address: "judy@no-tlsa.example",
        level: "tls",
        problem: None,
        also: |r, _| {
            assert_eq!(mx0(r)["dane"], "none");
            assert_eq!(mx0(r)["dnssec"], "secure");
            assert_eq!(mx0(r)["dnssec_lookups"]["tlsa"], "secure");
            assert_eq!(mx0(r)["starttls"], true);
        },
    });

    // --- RFC 7672 §2.2.2: CNAME-expanded name's TLSA, name checked too ------
    let cname_ca = TestCa::new("mailtls cname TA");
    let cname = start(Behaviour::starttls(
        &cname_ca.issue("real.cname-target.example"),
    ))?;
    let z = dns.zone("cname.example.", Signing::Signed);
    z.mx(10, "mx.cname.example.")
        .cname("mx.cname.example.", "real.cname-target.example.");
    let z = dns.zone("cname-target.example.", Signing::Signed);
    z.a("real.cname-target.example.", v4(cname.ip()));
    tlsa(
        z,
        "_25._tcp.real.cname-target.example.",
        &pki::dane_ta(&cname_ca),
    );
    cases.push(Case {
        address: "kim@cname.example",
        level: "dane",
        problem: None,
        also: nothing,
    });
    servers.push(cname);

    // --- Non-delivery states (SPEC §1) --------------------------------------
    dns.zone("null-mx.example.", Signing::Signed).null_mx();
    cases.push(Case {
        address: "mallory@null-mx.example",
        level: "unknown",
        problem: Some("null_mx"),
        also: nothing,
    });
    cases.push(Case {
        address: "nobody@nowhere.example",
        level: "unknown",
        problem: Some("nxdomain"),
        also: nothing,
    });
    dns.zone("no-servers.example.", Signing::Signed)
        .txt("no-servers.example.", "v=spf1 -all");
    cases.push(Case {
        address: "x@no-servers.example",
        level: "unknown",
        problem: Some("no_mail_servers"),
        also: nothing,
    });

    // --- RFC 5321 §5.1: implicit MX ------------------------------------------
    dns.zone("implicit.example.", Signing::Signed)
        .a("implicit.example.", shared_ip);
    cases.push(Case {
        address: "niaj@implicit.example",
        level: "tls",
        problem: None,
        also: |r, _| {
            assert_eq!(mx0(r)["host"], "implicit.example");
            assert_eq!(mx0(r)["preference"], 0);
        },
    });

    // --- RFC 5321 §5.1: the first MX refuses connections, the second works --
    let z = dns.zone("two-mx.example.", Signing::Signed);
    z.mx(10, "mx1.two-mx.example.")
        .a("mx1.two-mx.example.", v4(fresh_loopback_ip()));
    z.mx(20, "mx2.two-mx.example.")
        .a("mx2.two-mx.example.", shared_ip);
    cases.push(Case {
        address: "olivia@two-mx.example",
        level: "tls",
        problem: None,
        also: |r, _| {
            assert_eq!(r["mx"][0]["host"], "mx1.two-mx.example");
            assert!(
                r["mx"][0]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("connect")),
                "{}",
                r["mx"][0]
            );
            assert_eq!(r["mx"][1]["tls_version"], "TLSv1.3");
        },
    });

    // --- RFC 3207 / RFC 7435: opportunistic STARTTLS ------------------------
    let plain = start(Behaviour::NoStarttls)?;
    let z = dns.zone("plain.example.", Signing::Signed);
    z.mx(10, "mx.plain.example.")
        .a("mx.plain.example.", v4(plain.ip()));
    cases.push(Case {
        address: "peggy@plain.example",
        level: "none",
        problem: None,
        also: |r, _| {
            assert_eq!(mx0(r)["starttls"], false);
        },
    });
    servers.push(plain);

    let refuse = start(Behaviour::RefuseStarttls)?;
    let z = dns.zone("refuse.example.", Signing::Signed);
    z.mx(10, "mx.refuse.example.")
        .a("mx.refuse.example.", v4(refuse.ip()));
    cases.push(Case {
        address: "rupert@refuse.example",
        level: "none",
        problem: None,
        also: |r, _| {
            assert_eq!(mx0(r)["starttls"], true);
            let outcome = &mx0(r)["probes"][0]["outcome"];
            assert_eq!(outcome["kind"], "starttls_refused");
            assert!(
                outcome["reply"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("454")),
                "{outcome}"
            );
        },
    });
    servers.push(refuse);

    // --- CVE-2011-0411: plaintext pipelined after the STARTTLS reply --------
    let pipe_cred = pki::self_signed("mx.pipeline.example");
    let pipe = start(Behaviour::pipeline_after_starttls(&pipe_cred))?;
    let z = dns.zone("pipeline.example.", Signing::Signed);
    z.mx(10, "mx.pipeline.example.")
        .a("mx.pipeline.example.", v4(pipe.ip()));
    cases.push(Case {
        address: "sybil@pipeline.example",
        level: "tls",
        problem: None,
        also: |r, _| {
            assert_eq!(mx0(r)["probes"][0]["discarded_pipelined"], true);
        },
    });
    servers.push(pipe);

    // --- Legacy interop: TLS 1.0 with RSA key transport ----------------------
    let legacy = start(Behaviour::Legacy)?;
    let z = dns.zone("legacy.example.", Signing::Signed);
    z.mx(10, "mx.legacy.example.")
        .a("mx.legacy.example.", v4(legacy.ip()));
    cases.push(Case {
        address: "trent@legacy.example",
        level: "tls",
        problem: None,
        also: |r, _| {
            assert_eq!(mx0(r)["tls_version"], "TLSv1");
            assert_eq!(mx0(r)["legacy_tls"], true);
        },
    });
    servers.push(legacy);

    servers.push(shared);
    let dns = dns.start().await?;
    Ok(World {
        dns,
        _servers: servers,
        cases,
    })
}

/// Runs the real binary (off the async runtime, which serves the DNS).
async fn mailtls(args: Vec<String>) -> Result<Output, Box<dyn Error>> {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailtls"))
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
    })
    .await??;
    Ok(output)
}

fn check_args(world: &World, mode: Mode, resolver: String) -> Vec<String> {
    let mut args = vec![
        "check".to_owned(),
        "--json".to_owned(),
        "--allow-private".to_owned(),
        "--timeout".to_owned(),
        "10".to_owned(),
    ];
    args.extend(["--resolver".to_owned(), resolver]);
    // A fresh TLS memory per world, so that every check probes live.
    let data_dir = world.dns.scratch_dir().join(format!("data-{mode:?}"));
    args.extend(["--data-dir".to_owned(), data_dir.display().to_string()]);
    match mode {
        Mode::Validate => args.extend([
            "--trust-anchor".to_owned(),
            world.dns.trust_anchor_path().display().to_string(),
        ]),
        Mode::TrustAd => args.extend(["--dns-mode".to_owned(), "trust-ad".to_owned()]),
    }
    args
}

fn assert_cases(world: &World, mode: Mode, output: &Output) -> TestResult {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "exit status; stderr: {stderr}"
    );
    let reports: Vec<Value> = serde_json::from_slice(&output.stdout)?;
    assert_eq!(reports.len(), world.cases.len());
    let mut failures = Vec::new();
    for (case, report) in world.cases.iter().zip(&reports) {
        assert_eq!(
            report["address"], case.address,
            "reports keep the order of the arguments"
        );
        let problem = report["problem"].as_str();
        if report["level"] != case.level || problem != case.problem {
            failures.push(format!(
                "{mode:?} {}: want {} / {:?}, got {} / {:?}: {}",
                case.address, case.level, case.problem, report["level"], problem, report["detail"]
            ));
            continue;
        }
        let status = match case.level {
            "dane" => "DANE ok",
            "tls" => "SSL ok",
            "none" => "no SSL",
            _ => "SSL ?",
        };
        assert_eq!(report["status"], status, "{}", case.address);
        (case.also)(report, mode);
    }
    assert!(
        failures.is_empty(),
        "verdicts differ:\n{}",
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_in_validate_mode() -> TestResult {
    let world = build().await?;
    let mut args = check_args(&world, Mode::Validate, world.dns.addr().to_string());
    args.extend(world.cases.iter().map(|c| c.address.to_owned()));
    let output = mailtls(args).await?;
    assert_cases(&world, Mode::Validate, &output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_in_trust_ad_mode_through_unbound() -> TestResult {
    let world = build().await?;
    let unbound = world.dns.start_unbound().await?;
    let mut args = check_args(&world, Mode::TrustAd, unbound.addr().to_string());
    args.extend(world.cases.iter().map(|c| c.address.to_owned()));
    let output = mailtls(args).await?;
    assert_cases(&world, Mode::TrustAd, &output)
        .map_err(|e| format!("{e}\nunbound log:\n{}", unbound.log()).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_output_and_exit_status() -> TestResult {
    let world = build().await?;
    let mut args = check_args(&world, Mode::Validate, world.dns.addr().to_string());
    args.retain(|a| a != "--json");
    args.extend([
        "--verbose".into(),
        "alice@dane-ee.example".into(),
        "peggy@plain.example".into(),
        "foo".into(),
    ]);
    let output = mailtls(args).await?;
    let text = String::from_utf8(output.stdout)?;
    assert_eq!(
        output.status.code(),
        Some(1),
        "an invalid address makes the exit status 1:\n{text}"
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("DANE ok") && lines[0].contains("alice@dane-ee.example"),
        "{text}"
    );
    assert!(
        lines[1].contains("no SSL") && lines[1].contains("peggy@plain.example"),
        "{text}"
    );
    assert!(
        lines[2].contains("invalid address") && lines[2].contains("foo"),
        "{text}"
    );
    assert!(
        text.contains("TLS: TLSv1.3"),
        "verbose shows the TLS details:\n{text}"
    );
    assert!(
        text.contains("(matched)"),
        "verbose shows which TLSA matched:\n{text}"
    );
    assert!(!text.contains('\x1b'), "NO_COLOR is honoured");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_not_probed_without_permission() -> TestResult {
    let world = build().await?;
    let mut args = check_args(&world, Mode::Validate, world.dns.addr().to_string());
    args.retain(|a| a != "--allow-private");
    args.push("alice@dane-ee.example".into());
    let output = mailtls(args).await?;
    let reports: Vec<Value> = serde_json::from_slice(&output.stdout)?;
    assert_eq!(reports[0]["problem"], "unreachable");
    assert_eq!(
        mx0(&reports[0])["probes"][0]["outcome"]["kind"],
        "not_allowed"
    );
    assert!(
        reports[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("--allow-private"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_writes_json_lines_and_csv() -> TestResult {
    let world = build().await?;
    let dir = world.dns.scratch_dir().to_owned();
    let input = dir.join("domains.txt");
    std::fs::write(
        &input,
        "# a comment\ndane-ee.example\n\npeggy@plain.example\nnot a domain\nnowhere.example\n",
    )?;
    let mut base = check_args(&world, Mode::Validate, world.dns.addr().to_string());
    base.retain(|a| a != "--json" && a != "check");

    let mut args = vec![
        "scan".to_owned(),
        input.display().to_string(),
        "--concurrency".into(),
        "2".into(),
    ];
    args.extend(base.clone());
    let output = mailtls(args).await?;
    assert_eq!(output.status.code(), Some(1), "one line is invalid");
    let mut levels: Vec<(String, String)> = String::from_utf8(output.stdout)?
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).map(|v| {
                (
                    v["address"].as_str().unwrap_or("").to_owned(),
                    v["level"].as_str().unwrap_or("").to_owned(),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    levels.sort();
    assert_eq!(
        levels,
        vec![
            ("dane-ee.example".to_owned(), "dane".to_owned()),
            ("not a domain".to_owned(), "unknown".to_owned()),
            ("nowhere.example".to_owned(), "unknown".to_owned()),
            ("peggy@plain.example".to_owned(), "none".to_owned()),
        ]
    );

    let csv_path = dir.join("out.csv");
    let mut args = vec![
        "scan".to_owned(),
        input.display().to_string(),
        "--format".into(),
        "csv".into(),
        "--output".into(),
        csv_path.display().to_string(),
    ];
    args.extend(base);
    let output = mailtls(args).await?;
    assert_eq!(output.status.code(), Some(1));
    let csv = std::fs::read_to_string(&csv_path)?;
    assert!(
        csv.starts_with("address,domain,level,status,problem"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("dane-ee.example,dane-ee.example,dane,DANE ok,")),
        "{csv}"
    );
    Ok(())
}

// SPEC §1 / issue #3: "mailtls check now answers from the memory first: a
// domain never contacted and not probed is SSL ?".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_answers_from_the_memory_after_a_probe() -> TestResult {
    let world = build().await?;
    let base = check_args(&world, Mode::Validate, world.dns.addr().to_string());
    let run = |extra: &[&str]| {
        let mut args = base.clone();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        mailtls(args)
    };
    let reports = |output: Output| -> Result<Vec<Value>, Box<dyn Error>> {
        Ok(serde_json::from_slice(&output.stdout)?)
    };

    let before = reports(run(&["--no-probe", "alice@dane-ee.example"]).await?)?;
    assert_eq!(
        (before[0]["status"].as_str(), before[0]["source"].as_str()),
        (Some("SSL ?"), Some("memory"))
    );

    let probed = reports(run(&["alice@dane-ee.example", "peggy@plain.example"]).await?)?;
    assert_eq!(probed[0]["source"], "probe");
    assert_eq!(probed[0]["status"], "DANE ok");

    let after = reports(
        run(&[
            "--no-probe",
            "alice@dane-ee.example",
            "peggy@plain.example",
            "judy@no-tlsa.example",
        ])
        .await?,
    )?;
    let got: Vec<(&str, &str)> = after
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap_or(""),
                r["source"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("DANE ok", "memory"),
            ("no SSL", "memory"),
            ("SSL ?", "memory")
        ]
    );

    // Without --no-probe a known domain is answered from the memory too.
    let again = reports(run(&["alice@dane-ee.example"]).await?)?;
    assert_eq!(
        (again[0]["status"].as_str(), again[0]["source"].as_str()),
        (Some("DANE ok"), Some("memory"))
    );
    Ok(())
}

#[tokio::test]
async fn usage_and_config_errors_exit_2() -> TestResult {
    for args in [
        vec!["check"],
        vec!["check", "--dns-mode", "yolo", "a@example.org"],
        vec![
            "check",
            "--dns-mode",
            "trust-ad",
            "--resolver",
            "192.0.2.1:53",
            "a@example.org",
        ],
        vec![
            "check",
            "--trust-anchor",
            "/nonexistent/anchor",
            "a@example.org",
        ],
        vec![
            "--config",
            "/nonexistent/mailtls.toml",
            "check",
            "a@example.org",
        ],
        vec!["scan", "/nonexistent/list"],
    ] {
        let output = mailtls(args.iter().map(|s| (*s).to_owned()).collect()).await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    Ok(())
}
