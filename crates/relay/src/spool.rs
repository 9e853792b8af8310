//! The spool: message bodies on disk, durable before the `250`.
//!
//! A `250` reply to DATA is a promise (RFC 5321 §6.1: the server "MUST NOT
//! lose the message for frivolous reasons"), and SPEC §6 asks that it
//! survive `kill -9` and a crash. So a body is written to `spool/tmp/<id>`,
//! the file is fsynced, renamed into `spool/<id>.eml` and the directory is
//! fsynced: after [`SpoolWriter::commit`] returns, the name and the bytes are
//! both on disk. A writer dropped without a commit removes its temporary
//! file, so a failed or refused message leaves nothing behind.
//!
//! Bodies are stored in wire form: CRLF lines, not dot-stuffed, with our
//! `Received:` header first. The metadata (envelope, per-recipient state)
//! lives in the store's queue; the two are joined by the message id.
//!
//! **Held envelopes.** Normally the envelope goes to the store's queue right
//! after the body is committed. When the store cannot take it (a fleet's
//! PostgreSQL unreachable, issue #6), the envelope is written next to the
//! body as `<id>.held.json`, durably like the body, and the message is still
//! accepted: it is safe on local disk. The queue runner moves held envelopes
//! into the store as soon as it answers again ([`Spool::held`],
//! [`Spool::release_held`]).
//!
//! File operations run on tokio's blocking pool (`spawn_blocking`), so a slow
//! disk never stalls the SMTP sessions on the runtime's threads.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use mailtls_store::NewMessage;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Directory of committed messages, under the data directory.
const SPOOL_DIR: &str = "spool";
/// Directory of messages being written, under the spool.
const TMP_DIR: &str = "tmp";
/// File name suffix of committed messages.
const SUFFIX: &str = "eml";
/// File name suffix of envelopes held while the store is unavailable.
const HELD_SUFFIX: &str = "held.json";
/// Largest held envelope read back (recipients × address length, bounded
/// by the submission limits; this is far above them).
const MAX_HELD_SIZE: u64 = 4 * 1024 * 1024;
/// A temporary file this old is a crash's leftover: no SMTP session lasts
/// that long between two writes (the idle timeout is minutes).
pub const STALE_TMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// The spool directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    /// Held envelopes known to exist (counted at open, then kept up to
    /// date), so that the runner looks for them only when there are some.
    held: Arc<AtomicUsize>,
}

impl Spool {
    /// Opens the spool under `data_dir`, creating `<data_dir>/spool` and
    /// `spool/tmp` (mode 0700 on Unix) when missing. Temporary files older
    /// than [`STALE_TMP_AGE`] are left from a crash and never acknowledged:
    /// they are removed. Younger ones may belong to a server running now
    /// (an admin command opens the spool too) and are left alone.
    pub fn open(data_dir: &Path) -> io::Result<Spool> {
        let dir = data_dir.join(SPOOL_DIR);
        create_private_dir(&dir)?;
        let tmp = dir.join(TMP_DIR);
        create_private_dir(&tmp)?;
        let now = SystemTime::now();
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok());
            if meta.is_file() && age.is_some_and(|age| age > STALE_TMP_AGE) {
                fs::remove_file(entry.path())?;
            }
        }
        let held = fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(HELD_SUFFIX))
            .count();
        Ok(Spool {
            dir,
            held: Arc::new(AtomicUsize::new(held)),
        })
    }

    /// Keeps `message`'s envelope on local disk (the store could not queue
    /// it): written to `tmp/`, fsynced, renamed to `<id>.held.json`, the
    /// directory fsynced. After this returns the message may be accepted.
    pub async fn hold(&self, message: &NewMessage) -> io::Result<()> {
        check_id(&message.id)?;
        let json = serde_json::to_vec(message).map_err(io::Error::other)?;
        let tmp = self
            .dir
            .join(TMP_DIR)
            .join(format!("{}.{HELD_SUFFIX}", message.id));
        let path = self.held_path(&message.id);
        let dir = self.dir.clone();
        blocking(move || {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            let written = file
                .write_all(&json)
                .and_then(|()| file.sync_all())
                .and_then(|()| fs::rename(&tmp, &path))
                .and_then(|()| sync_dir(&dir));
            if written.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            written
        })
        .await?;
        self.held.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether any envelope may be held (cheap: no disk access).
    pub fn has_held(&self) -> bool {
        self.held.load(Ordering::Relaxed) > 0
    }

    /// Every held envelope, oldest id first. A file that cannot be read as
    /// an envelope is reported as an error for its id and left in place
    /// for the operator.
    pub async fn held(&self) -> io::Result<Vec<Result<NewMessage, (String, String)>>> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut names: Vec<String> = fs::read_dir(&dir)?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(HELD_SUFFIX))
                .collect();
            names.sort();
            Ok(names
                .into_iter()
                .map(|name| {
                    let path = dir.join(&name);
                    let read = fs::metadata(&path).and_then(|m| {
                        if m.len() > MAX_HELD_SIZE {
                            Err(io::Error::other("too large"))
                        } else {
                            fs::read(&path)
                        }
                    });
                    read.map_err(|e| e.to_string())
                        .and_then(|bytes| {
                            serde_json::from_slice::<NewMessage>(&bytes).map_err(|e| e.to_string())
                        })
                        .map_err(|e| (name, e))
                })
                .collect())
        })
        .await
    }

    /// Removes a held envelope once the store has it.
    pub async fn release_held(&self, id: &str) -> io::Result<()> {
        check_id(id)?;
        let path = self.held_path(id);
        let dir = self.dir.clone();
        let removed = blocking(move || match fs::remove_file(&path) {
            Ok(()) => sync_dir(&dir).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await?;
        if removed {
            let _ = self
                .held
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        Ok(())
    }

    fn held_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.{HELD_SUFFIX}"))
    }

    /// A new message id: unique across processes and nodes, sortable by the
    /// time it was made (to the microsecond), and only `[0-9A-Z]`, so it is
    /// safe in file names, SQL, logs and the `Received:` header.
    pub fn new_id() -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // 13 hex digits of microseconds last until the year 2112; the counter
        // orders ids made in the same microsecond; the random part keeps the
        // nodes of a fleet (one shared queue) apart.
        format!(
            "{:013X}{:04X}{:08X}",
            micros & 0xF_FFFF_FFFF_FFFF,
            count & 0xFFFF,
            random_u32(micros, count)
        )
    }

    /// Starts writing the message `id` (a temporary file until committed).
    pub async fn create(&self, id: &str) -> io::Result<SpoolWriter> {
        check_id(id)?;
        let tmp = self.dir.join(TMP_DIR).join(id);
        let path = self.path(id);
        let dir = self.dir.clone();
        let file = blocking({
            let tmp = tmp.clone();
            move || {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
            }
        })
        .await?;
        Ok(SpoolWriter {
            file: Some(file),
            tmp,
            path,
            dir,
            committed: false,
        })
    }

    /// Where the committed message `id` is.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.{SUFFIX}"))
    }

    /// The whole committed message `id`. Its size is bounded by the
    /// submission size limit that let it in.
    pub async fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        check_id(id)?;
        let path = self.path(id);
        blocking(move || fs::read(path)).await
    }

    /// Removes the message `id` (delivered, bounced or deleted). A message
    /// that is not there is not an error: removal may be retried.
    pub async fn remove(&self, id: &str) -> io::Result<()> {
        check_id(id)?;
        let path = self.path(id);
        let dir = self.dir.clone();
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => sync_dir(&dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }
}

/// A message being written to the spool. Nothing is durable, and nothing is
/// visible under [`Spool::path`], until [`SpoolWriter::commit`].
#[derive(Debug)]
pub struct SpoolWriter {
    /// `None` only while a blocking write holds it, or after commit.
    file: Option<fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    committed: bool,
}

impl SpoolWriter {
    /// Appends bytes to the message.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.take_file()?;
        // The bytes are copied once to cross into the blocking pool; the
        // alternative (block_in_place) would panic on a current-thread runtime.
        let bytes = bytes.to_vec();
        let (file, result) = blocking(move || {
            let result = file.write_all(&bytes);
            Ok((file, result))
        })
        .await?;
        self.file = Some(file);
        result
    }

    /// Makes the message durable: fsync the file, rename it into the spool,
    /// fsync the spool directory (so that the new name survives a crash).
    pub async fn commit(mut self) -> io::Result<()> {
        let file = self.take_file()?;
        let (tmp, path, dir) = (self.tmp.clone(), self.path.clone(), self.dir.clone());
        blocking(move || {
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &path)?;
            sync_dir(&dir)
        })
        .await?;
        self.committed = true;
        Ok(())
    }

    fn take_file(&mut self) -> io::Result<fs::File> {
        self.file
            .take()
            .ok_or_else(|| io::Error::other("spool writer used after a failed write"))
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort, and synchronous: unlinking one file is quick, and
            // a leftover is removed by the next `Spool::open` anyway.
            self.file.take();
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Ids come from [`Spool::new_id`]; anything else (a path separator, `..`)
/// must never reach the file system.
fn check_id(id: &str) -> io::Result<()> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad spool message id",
        ))
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// fsync a directory, so that a rename or unlink in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("spool task failed: {e}")))?
}

/// 32 unpredictable bits without a random-number crate: std's `RandomState`
/// is seeded from the operating system's random source once per process.
fn random_u32(micros: u128, count: u32) -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    static STATE: OnceLock<RandomState> = OnceLock::new();
    let hash = STATE
        .get_or_init(RandomState::new)
        .hash_one((micros, count, std::process::id()));
    // Truncation intended: any 32 bits of the hash are as good as others.
    hash as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sortable_and_safe() {
        let ids: Vec<String> = (0..1000).map(|_| Spool::new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "ids sort in the order they were made");
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert!(ids.iter().all(|id| check_id(id).is_ok() && id.len() == 25));
    }

    #[tokio::test]
    async fn committed_message_is_readable_and_removable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        let id = Spool::new_id();
        let mut writer = spool.create(&id).await.expect("create");
        writer.write_all(b"Received: x\r\n").await.expect("write");
        writer.write_all(b"\r\nbody\r\n").await.expect("write");
        assert!(!spool.path(&id).exists(), "not visible before commit");
        writer.commit().await.expect("commit");
        assert_eq!(
            spool.read(&id).await.expect("read"),
            b"Received: x\r\n\r\nbody\r\n"
        );
        assert!(
            fs::read_dir(dir.path().join("spool/tmp"))
                .expect("tmp")
                .next()
                .is_none()
        );
        spool.remove(&id).await.expect("remove");
        assert!(!spool.path(&id).exists());
        spool.remove(&id).await.expect("removing twice is fine");
    }

    #[tokio::test]
    async fn uncommitted_writer_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        let id = Spool::new_id();
        let mut writer = spool.create(&id).await.expect("create");
        writer.write_all(b"half a message").await.expect("write");
        drop(writer);
        assert!(!spool.path(&id).exists());
        assert!(
            fs::read_dir(dir.path().join("spool/tmp"))
                .expect("tmp")
                .next()
                .is_none()
        );
    }

    #[tokio::test]
    async fn open_clears_stale_temporary_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        Spool::open(dir.path()).expect("open");
        let stale = dir.path().join("spool/tmp/STALE");
        fs::write(&stale, b"x").expect("write");
        let old = SystemTime::now() - STALE_TMP_AGE - Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&stale)
            .expect("open")
            .set_modified(old)
            .expect("mtime");
        let fresh = dir.path().join("spool/tmp/FRESH");
        fs::write(&fresh, b"x").expect("write");
        Spool::open(dir.path()).expect("reopen");
        assert!(!stale.exists(), "a crash's leftover is removed");
        assert!(fresh.exists(), "a message being received now is not");
    }

    #[tokio::test]
    async fn ids_that_are_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        for bad in ["", "../x", "a/b", "a.b"] {
            assert!(spool.create(bad).await.is_err(), "{bad:?}");
            assert!(spool.read(bad).await.is_err(), "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn spool_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        Spool::open(dir.path()).expect("open");
        let mode = fs::metadata(dir.path().join("spool"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
