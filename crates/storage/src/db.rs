//! The database: opened once, schema created if missing, one connection behind a mutex.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the file is larger than storage.max_file_size ({0} bytes)")]
    TooLarge(usize),
    /// The database cannot be reached (PostgreSQL down, a network cut): the call may succeed
    /// later; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// The database's schema is newer than this Laneway knows.
    #[error("{0}")]
    Schema(String),
}

impl Error {
    /// Whether the disk (or the filesystem's quota) is full.
    pub fn disk_full(&self) -> bool {
        match self {
            Self::Io(e) => e.raw_os_error() == Some(28) || e.raw_os_error() == Some(27),
            Self::Sql(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::DiskFull
            }
            _ => false,
        }
    }
}

pub struct Storage {
    root: PathBuf,
    conn: Mutex<Connection>,
    pub max_file_size: usize,
}

/// Which lane made each Responses API id (`responses.rs`).
const RESPONSE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS response_lanes (
  id TEXT PRIMARY KEY,
  lane TEXT NOT NULL,
  owner TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  filename TEXT NOT NULL,
  purpose TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  owner TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  input_file_id TEXT NOT NULL,
  completion_window TEXT NOT NULL,
  status TEXT NOT NULL,
  metadata TEXT,
  errors TEXT,
  output_file_id TEXT,
  error_file_id TEXT,
  created_at INTEGER NOT NULL,
  in_progress_at INTEGER,
  expires_at INTEGER NOT NULL,
  finalizing_at INTEGER,
  completed_at INTEGER,
  failed_at INTEGER,
  expired_at INTEGER,
  cancelling_at INTEGER,
  cancelled_at INTEGER,
  total INTEGER NOT NULL DEFAULT 0,
  completed INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS results (
  batch_id TEXT NOT NULL,
  custom_id TEXT NOT NULL,
  line INTEGER NOT NULL,
  ok INTEGER NOT NULL,
  output TEXT NOT NULL,
  PRIMARY KEY (batch_id, custom_id)
);
";

/// The schema version this Laneway writes: 1 files, batches and results; 2 items with their
/// leases.
pub const SCHEMA_VERSION: i64 = 2;

/// Changes from version 1 to 2.
const ITEMS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
  batch_id TEXT NOT NULL,
  custom_id TEXT NOT NULL,
  line INTEGER NOT NULL,
  body TEXT NOT NULL,
  holder TEXT,
  lease_until INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (batch_id, custom_id)
);
CREATE INDEX IF NOT EXISTS items_by_line ON items (batch_id, line);
ALTER TABLE batches ADD COLUMN items_loaded INTEGER NOT NULL DEFAULT 0;
";

/// Brings the schema to [`SCHEMA_VERSION`] (SQLite's `user_version`), in one transaction;
/// refuses a database written by a newer Laneway.
fn migrate(conn: &Connection) -> Result<(), Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::Schema(format!(
            "the database's schema is version {version}, newer than this Laneway's {SCHEMA_VERSION}; run a newer Laneway"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let mut steps = String::from("BEGIN;");
    if version < 1 {
        steps.push_str(SCHEMA);
        steps.push_str(RESPONSE_SCHEMA);
    }
    if version < 2 {
        steps.push_str(ITEMS_SCHEMA);
    }
    steps.push_str(&format!("PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"));
    conn.execute_batch(&steps)?;
    Ok(())
}

/// The schema version of the SQLite database under `root`, if there is one.
pub fn sqlite_version(root: &Path) -> Result<Option<i64>, Error> {
    let path = root.join("laneway.db");
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(Some(
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
    ))
}

impl Storage {
    /// Opens (creating if missing) the storage under `root`. Leftovers of a process that died
    /// mid-write (partial uploads, unrecorded output files) are removed.
    pub fn open(root: &Path, max_file_size: usize) -> Result<Self, Error> {
        crate::private::ensure_dir(root)?;
        crate::private::ensure_dir(&root.join("files"))?;
        crate::private::prepare_db_file(&root.join("laneway.db"))?;
        let conn = Connection::open(root.join("laneway.db"))?;
        // WAL: readers never block the writer; NORMAL sync is durable across a killed process
        // (only a power loss may lose the last transactions).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        // One process owns this file: items its previous run held are free again at once.
        conn.execute("UPDATE items SET holder = NULL, lease_until = 0", [])?;
        let s = Self {
            root: root.to_owned(),
            conn: Mutex::new(conn),
            max_file_size,
        };
        s.remove_orphans()?;
        Ok(s)
    }

    /// Removes contents no row names: an output file moved into place by a process that died
    /// before its transaction committed (the batch is finalized again and writes new ones).
    fn remove_orphans(&self) -> Result<(), Error> {
        let known: std::collections::HashSet<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT id FROM files")?;
            let ids = stmt.query_map([], |r| r.get(0))?;
            ids.collect::<Result<_, _>>()?
        };
        for entry in std::fs::read_dir(self.root.join("files"))?.flatten() {
            let name = entry.file_name();
            if !known.contains(name.to_string_lossy().as_ref()) {
                tracing::warn!(file = %entry.path().display(), "removing a file no record names");
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn file_path(&self, id: &str) -> PathBuf {
        self.root.join("files").join(id)
    }
}
