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

    pub(super) fn parse(s: &str) -> Self {
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
    pub(super) fn column(self) -> &'static str {
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
}

pub(super) const COLUMNS: &str = "id, owner, endpoint, input_file_id, completion_window, status, metadata, errors, \
    output_file_id, error_file_id, created_at, in_progress_at, expires_at, finalizing_at, completed_at, \
    failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed";

fn count(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, i64>(i)?.max(0).unsigned_abs())
}

impl Batch {
    pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        let json_col = |i: usize| -> rusqlite::Result<Option<Value>> {
            Ok(r.get::<_, Option<String>>(i)?
                .and_then(|s| serde_json::from_str(&s).ok()))
        };
        let mut times = [None; 9];
        for (k, t) in times.iter_mut().enumerate() {
            *t = r.get(10 + k)?;
        }
        Ok(Self {
            id: r.get(0)?,
            owner: r.get(1)?,
            endpoint: r.get(2)?,
            input_file_id: r.get(3)?,
            completion_window: r.get(4)?,
            status: BatchStatus::parse(&r.get::<_, String>(5)?),
            metadata: json_col(6)?,
            errors: json_col(7)?,
            output_file_id: r.get(8)?,
            error_file_id: r.get(9)?,
            times,
            counts: Counts {
                total: count(r, 19)?,
                completed: count(r, 20)?,
                failed: count(r, 21)?,
            },
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
