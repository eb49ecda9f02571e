//! What the Batch API and the response-id record need of a store, whichever engine keeps it:
//! SQLite under `[storage] path` for one machine ([`crate::Storage`]), PostgreSQL under
//! `[storage] url` for a fleet ([`crate::Postgres`]). The Batch API calls only this trait, so
//! both run the same code path and the same tests.
//!
//! Everything is blocking; callers run it off the async threads.
//!
//! # Items and leases
//! A batch's items are stored when it starts. A replica takes items with [`Store::claim`],
//! which leases them to it for a while; it renews the leases of what it still holds
//! ([`Store::renew`]) and an item leaves the table when its result is recorded
//! ([`Store::record`]). Two replicas never hold the same item, and the items of a replica that
//! died are claimed by another once their lease has run out.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::batches::{Batch, BatchStatus, ItemResult};
use crate::db::Error;
use crate::files::{FileObject, Upload};

/// One batch item: its line in the input file, its `custom_id` and its request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub line: u64,
    pub custom_id: String,
    pub body: String,
}

/// A new batch, as `POST /v1/batches` asked for it.
pub struct NewBatch<'a> {
    pub owner: &'a str,
    pub endpoint: &'a str,
    pub input_file_id: &'a str,
    pub window_secs: i64,
    pub window: &'a str,
    pub metadata: Option<&'a Value>,
}

pub trait Store: Send + Sync + 'static {
    /// "SQLite at laneway-data" or "PostgreSQL at host/db, schema 2": for logs and `check`.
    fn describe(&self) -> String;

    /// Starts an upload limited to `storage.max_file_size`; its bytes are spooled to a private
    /// file until [`Store::keep_upload`].
    fn begin_upload(&self) -> Result<Upload, Error>;
    /// Makes a finished upload a file: all of it, or nothing.
    fn keep_upload(
        &self,
        up: Upload,
        owner: &str,
        filename: &str,
        purpose: &str,
    ) -> Result<FileObject, Error>;
    /// Files `owner` may see (all of them for `None`, the admin), newest first.
    fn list_files(
        &self,
        owner: Option<&str>,
        purpose: Option<&str>,
    ) -> Result<Vec<FileObject>, Error>;
    /// One file, if it exists and `owner` may see it.
    fn file(&self, id: &str, owner: Option<&str>) -> Result<FileObject, Error>;
    /// A file's content, read as it is consumed.
    fn content(&self, f: &FileObject) -> Result<Box<dyn Read + Send>, Error>;
    fn delete_file(&self, id: &str, owner: Option<&str>) -> Result<FileObject, Error>;

    fn create_batch(&self, new: &NewBatch<'_>) -> Result<Batch, Error>;
    fn batch(&self, id: &str, owner: Option<&str>) -> Result<Batch, Error>;
    /// Newest first, after the batch `after`, at most `limit`; and whether more follow.
    fn list_batches(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Batch>, bool), Error>;
    /// Batches not yet ended, oldest first.
    fn unfinished(&self) -> Result<Vec<Batch>, Error>;
    /// Moves a batch to `to` if it is in one of `from`; says whether it moved.
    fn transition(&self, id: &str, from: &[BatchStatus], to: BatchStatus) -> Result<bool, Error>;
    fn fail_validation(&self, id: &str, problems: &[Value]) -> Result<(), Error>;
    /// Stores the items of a checked input file and moves the batch from `validating` to
    /// `in_progress`, in one transaction; says whether it moved (another replica may have
    /// started it first). For a batch already `in_progress` whose items were never stored (a
    /// database from before items were), stores them, skipping those already recorded.
    fn start(&self, id: &str, items: &mut dyn Iterator<Item = Item>) -> Result<bool, Error>;
    /// Leases up to `n` items of an `in_progress` batch to `holder`, in input order: items no
    /// one holds or whose lease ran out.
    fn claim(&self, id: &str, holder: &str, n: usize, lease: Duration) -> Result<Vec<Item>, Error>;
    /// Extends the lease of every item `holder` still holds.
    fn renew(&self, holder: &str, lease: Duration) -> Result<(), Error>;
    /// Gives up every item `holder` holds, for others to claim at once (a draining replica).
    fn release(&self, holder: &str) -> Result<(), Error>;
    /// Items of batch `id` without a recorded result, held or not.
    fn remaining(&self, id: &str) -> Result<u64, Error>;
    /// Records a finished item once, by `custom_id`, while its batch runs; says whether it
    /// was new.
    fn record(&self, batch_id: &str, r: &ItemResult) -> Result<bool, Error>;
    /// Writes the output and error files and ends the batch in `to`, in one transaction, if
    /// it is still in a status that can end so (another replica may have ended it).
    fn finalize(&self, id: &str, to: BatchStatus) -> Result<Batch, Error>;
    /// Marks a batch for cancelling; a batch that already ended cannot be. The same on every
    /// store: a check and a conditional transition.
    fn cancel(&self, id: &str, owner: Option<&str>) -> Result<Batch, Error> {
        let b = self.batch(id, owner)?;
        if b.status.is_final() {
            return Err(Error::Invalid(format!(
                "batch `{id}` is already {} and cannot be cancelled",
                b.status.as_str()
            )));
        }
        self.transition(
            id,
            &[BatchStatus::Validating, BatchStatus::InProgress],
            BatchStatus::Cancelling,
        )?;
        self.batch(id, None)
    }

    /// Records that `lane` made response `id` for the key `owner`.
    fn record_response(&self, id: &str, lane: &str, owner: &str) -> Result<(), Error>;
    /// The lane that made response `id`, and the key it was made for.
    fn response_lane(&self, id: &str) -> Result<Option<(String, String)>, Error>;
    fn forget_response(&self, id: &str) -> Result<(), Error>;
}

/// Milliseconds since the Unix epoch, for leases.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A lease's length in milliseconds, bounded.
pub(crate) fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// A claim's size, bounded for the database.
pub(crate) fn claim_size(n: usize) -> i64 {
    i64::try_from(n.min(1000)).unwrap_or(1000)
}
