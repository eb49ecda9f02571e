//! A batch as the API shows it: its status, counts and timestamps, read from its row; and one
//! finished item as it goes into the output or error file.

use rusqlite::Row;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validating => "validating",
            Self::Failed => "failed",
            Self::InProgress => "in_progress",
            Self::Finalizing => "finalizing",
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "validating" => Self::Validating,
            "in_progress" => Self::InProgress,
            "finalizing" => Self::Finalizing,
            "completed" => Self::Completed,
            "expired" => Self::Expired,
            "cancelling" => Self::Cancelling,
            "cancelled" => Self::Cancelled,
            _ => Self::Failed,
        }
    }

    /// The timestamp column set when a batch enters this status.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::Validating => "created_at",
            Self::Failed => "failed_at",
            Self::InProgress => "in_progress_at",
            Self::Finalizing => "finalizing_at",
            Self::Completed => "completed_at",
            Self::Expired => "expired_at",
            Self::Cancelling => "cancelling_at",
            Self::Cancelled => "cancelled_at",
        }
    }

    /// The statuses a batch may end in `self` from (when several drivers may end it).
    pub(crate) fn ends_from(self) -> &'static [BatchStatus] {
        match self {
            Self::Completed => &[Self::Finalizing],
            Self::Cancelled => &[Self::Cancelling],
            _ => &[Self::InProgress, Self::Finalizing, Self::Cancelling],
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Failed | Self::Completed | Self::Expired | Self::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub id: String,
    pub owner: String,
    pub endpoint: String,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: BatchStatus,
    pub metadata: Option<Value>,
    pub errors: Option<Value>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    /// created, in_progress, expires, finalizing, completed, failed, expired, cancelling, cancelled
    pub times: [Option<i64>; 9],
    pub counts: Counts,
    /// Whether its items are stored (they are from the moment it starts).
    pub items_loaded: bool,
}

pub(crate) const COLUMNS: &str = "id, owner, endpoint, input_file_id, completion_window, status, metadata, errors, \
    output_file_id, error_file_id, created_at, in_progress_at, expires_at, finalizing_at, completed_at, \
    failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed, items_loaded";

/// A row of any engine's database, read by column number.
pub(crate) trait Cols {
    type E;
    fn text(&self, i: usize) -> Result<Option<String>, Self::E>;
    fn int(&self, i: usize) -> Result<Option<i64>, Self::E>;
}

impl Cols for Row<'_> {
    type E = rusqlite::Error;
    fn text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
}

impl Batch {
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Self::from_cols(r)
    }

    /// A batch from a row of [`COLUMNS`].
    pub(crate) fn from_cols<R: Cols>(r: &R) -> Result<Self, R::E> {
        let text = |i: usize| -> Result<String, R::E> { Ok(r.text(i)?.unwrap_or_default()) };
        let json_col = |i: usize| -> Result<Option<Value>, R::E> {
            Ok(r.text(i)?.and_then(|s| serde_json::from_str(&s).ok()))
        };
        let count =
            |i: usize| -> Result<u64, R::E> { Ok(r.int(i)?.unwrap_or(0).max(0).unsigned_abs()) };
        let mut times = [None; 9];
        for (k, t) in times.iter_mut().enumerate() {
            *t = r.int(10 + k)?;
        }
        Ok(Self {
            id: text(0)?,
            owner: text(1)?,
            endpoint: text(2)?,
            input_file_id: text(3)?,
            completion_window: text(4)?,
            status: BatchStatus::parse(&text(5)?),
            metadata: json_col(6)?,
            errors: json_col(7)?,
            output_file_id: r.text(8)?,
            error_file_id: r.text(9)?,
            times,
            counts: Counts {
                total: count(19)?,
                completed: count(20)?,
                failed: count(21)?,
            },
            items_loaded: r.int(22)?.unwrap_or(0) != 0,
        })
    }

    /// OpenAI's batch object.
    pub fn to_json(&self) -> Value {
        let t = &self.times;
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.as_str(),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": t[0],
            "in_progress_at": t[1],
            "expires_at": t[2],
            "finalizing_at": t[3],
            "completed_at": t[4],
            "failed_at": t[5],
            "expired_at": t[6],
            "cancelling_at": t[7],
            "cancelled_at": t[8],
            "request_counts": {"total": self.counts.total, "completed": self.counts.completed, "failed": self.counts.failed},
            "metadata": self.metadata,
        })
    }

    pub fn expires_at(&self) -> i64 {
        self.times[2].unwrap_or(i64::MAX)
    }
}

/// One finished item, as it goes into the output (or error) file.
pub struct ItemResult {
    pub line: u64,
    pub custom_id: String,
    /// Whether the upstream answered 2xx (the output file) or not (the error file).
    pub ok: bool,
    /// The whole output line, without its newline.
    pub output: String,
}
