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
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the file is larger than storage.max_file_size ({0} bytes)")]
    TooLarge(usize),
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
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(RESPONSE_SCHEMA)?;
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

    pub(crate) fn file_path(&self, id: &str) -> PathBuf {
        self.root.join("files").join(id)
    }
}
