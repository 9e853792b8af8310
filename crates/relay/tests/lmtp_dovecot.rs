//! Local delivery over LMTP (RFC 2033) into a real Dovecot: the relay hands
//! a message for two recipients to Dovecot's LMTP server; the known user gets
//! it in their Maildir, the unknown one is refused with `550 5.1.1`.
//!
//! Dovecot runs as a child process from a configuration written here, in a
//! temporary directory of its own (sockets, state, log, the users' homes),
//! so nothing of the system's Dovecot is used or touched. Needs the Debian
//! packages `dovecot-core` and `dovecot-lmtpd` (`.ci/install-deps`) and
//! root, as the tests in CI run: Dovecot refuses to deliver mail as root, so
//! the mailbox belongs to `nobody` and the test must be able to `chown`.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailtls_core::SmtpStatus;
use mailtls_relay::local::{LmtpTarget, LocalOutcome, LocalRecipient, MailStore};

const DOVECOT: &str = "/usr/sbin/dovecot";
/// The mail user: `nobody`/`nogroup` on Debian. Dovecot will not deliver as
/// root (`first_valid_uid` aside, it refuses uid 0 outright), and a
/// passwd-file userdb rejects uid 0 too.
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A Dovecot with only the LMTP service, killed when dropped.
struct Dovecot {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Dovecot {
    /// Writes the configuration and starts `dovecot -F`; returns once the
    /// LMTP port accepts connections.
    fn start() -> Dovecot {
        assert!(
            Path::new(DOVECOT).exists(),
            "{DOVECOT} is missing: run .ci/install-deps (Debian packages dovecot-core and \
             dovecot-lmtpd) to run this test"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // Dovecot's unprivileged processes (stats as `dovecot`, delivery as
        // the mail user) must be able to reach their sockets and the homes.
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
        let home = root.join("home/me");
        fs::create_dir_all(&home).expect("home");
        std::os::unix::fs::chown(&home, Some(MAIL_UID), Some(MAIL_GID)).unwrap_or_else(|e| {
            panic!(
                "chown {} to {MAIL_UID}: {e} (this test must run as root)",
                home.display()
            )
        });
        // user:password:uid:gid:gecos:home:shell:extra. Only me@example.org
        // exists, so the userdb refuses everyone else at RCPT (5.1.1).
        let users = root.join("users");
        fs::write(
            &users,
            format!(
                "me@example.org::{MAIL_UID}:{MAIL_GID}::{}::\n",
                home.display()
            ),
        )
        .expect("users");
        let port = free_port();
        let conf = root.join("dovecot.conf");
        let root = root.display();
        fs::write(
            &conf,
            format!(
                "base_dir = {root}/run
state_dir = {root}/state
instance_name = mailtls-test-{port}
protocols = lmtp
listen = 127.0.0.1
ssl = no
log_path = {root}/dovecot.log
first_valid_uid = {MAIL_UID}
first_valid_gid = {MAIL_GID}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
",
                users = users.display(),
            ),
        )
        .expect("dovecot.conf");
        let stderr = fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start dovecot");
        let mut dovecot = Dovecot { child, dir, port };
        dovecot.wait_until_listening();
        dovecot
    }

    fn wait_until_listening(&mut self) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dovecot exited ({status}):\n{}", self.logs());
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "dovecot did not listen on {address} within 5 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn tcp(&self) -> MailStore {
        MailStore::Lmtp(LmtpTarget::Tcp(format!("127.0.0.1:{}", self.port)))
    }

    fn unix(&self) -> MailStore {
        MailStore::Lmtp(LmtpTarget::Unix(self.dir.path().join("run/lmtp")))
    }

    fn new_mail(&self) -> Vec<PathBuf> {
        let new = self.dir.path().join("home/me/Maildir/new");
        let mut files: Vec<PathBuf> = fs::read_dir(&new)
            .map(|entries| entries.map(|e| e.expect("entry").path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    fn logs(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- stderr\n{}--- dovecot.log\n{}",
            read("stderr"),
            read("dovecot.log")
        )
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // The master's children notice it is gone and exit.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn recipient(mailbox: &str, original: &str) -> LocalRecipient {
    LocalRecipient {
        mailbox: mailbox.to_owned(),
        original: original.to_owned(),
    }
}

const MESSAGE: &[u8] = b"Received: from client.example.net by mx.example.org\r\n\
From: alice@example.net\r\n\
To: me@secure.example.org\r\n\
Subject: interop\r\n\
Message-ID: <lmtp-interop@example.net>\r\n\
\r\n\
Hello from mailtls over LMTP.\r\n\
.a line that starts with a dot\r\n";

#[tokio::test]
async fn dovecot_delivers_to_the_known_user_and_refuses_the_unknown_one() {
    let dovecot = Dovecot::start();

    let outcomes = dovecot
        .tcp()
        .deliver(
            "LMTP1",
            "alice@example.net",
            &[
                recipient("me@example.org", "me@secure.example.org"),
                recipient("nobody@example.org", "nobody@example.org"),
            ],
            MESSAGE,
            "mx.example.org",
            TIMEOUT,
        )
        .await;
    assert!(
        matches!(&outcomes[0], LocalOutcome::Delivered { detail } if detail.starts_with("250 2.0.0")),
        "{outcomes:?}\n{}",
        dovecot.logs()
    );
    assert!(
        matches!(
            &outcomes[1],
            LocalOutcome::Failed { status, reason }
                if *status == SmtpStatus::new(550, 5, 1, 1) && reason.contains("nobody@example.org")
        ),
        "{outcomes:?}"
    );

    let files = dovecot.new_mail();
    assert_eq!(files.len(), 1, "{files:?}\n{}", dovecot.logs());
    let mail = fs::read_to_string(&files[0]).expect("read the delivered mail");
    assert!(mail.contains("Return-Path: <alice@example.net>"), "{mail}");
    assert!(mail.contains("Subject: interop"), "{mail}");
    assert!(mail.contains("Hello from mailtls over LMTP."), "{mail}");
    // Mail to the secure alias says so, for the store's filters.
    assert!(
        mail.contains("X-Original-To: me@secure.example.org"),
        "{mail}"
    );
    // Dot-stuffing was undone by the server: the line is as the sender wrote it.
    assert!(mail.contains("\n.a line that starts with a dot"), "{mail}");
    assert!(!mail.contains("..a line"), "{mail}");
}

#[tokio::test]
async fn dovecot_accepts_the_same_delivery_over_its_unix_socket() {
    let dovecot = Dovecot::start();
    let outcomes = dovecot
        .unix()
        .deliver(
            "LMTP2",
            "",
            &[recipient("me@example.org", "me@example.org")],
            MESSAGE,
            "mx.example.org",
            TIMEOUT,
        )
        .await;
    assert!(
        matches!(&outcomes[0], LocalOutcome::Delivered { .. }),
        "{outcomes:?}\n{}",
        dovecot.logs()
    );
    let files = dovecot.new_mail();
    assert_eq!(files.len(), 1, "{files:?}");
    let mail = fs::read_to_string(&files[0]).expect("read the delivered mail");
    assert!(mail.contains("Return-Path: <>"), "{mail}");
    assert!(mail.contains("Hello from mailtls over LMTP."), "{mail}");
    assert!(
        !mail.contains("X-Original-To:"),
        "mail to the mailbox itself: {mail}"
    );
}
