//! [`Store`] on the SQLite database under `[storage] path`: the default for one machine.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::batches::{Batch, BatchStatus, ItemResult};
use crate::db::{Error, Storage};
use crate::files::{FileObject, Upload};
use crate::store::{Item, NewBatch, Store};

impl Store for Storage {
    fn describe(&self) -> String {
        format!(
            "SQLite at {}, schema {}",
            self.root().display(),
            crate::db::SCHEMA_VERSION
        )
    }

    fn begin_upload(&self) -> Result<Upload, Error> {
        Storage::begin_upload(self)
    }

    fn keep_upload(
        &self,
        up: Upload,
        owner: &str,
        filename: &str,
        purpose: &str,
    ) -> Result<FileObject, Error> {
        up.finish(self, owner, filename, purpose)
    }

    fn list_files(
        &self,
        owner: Option<&str>,
        purpose: Option<&str>,
    ) -> Result<Vec<FileObject>, Error> {
        Storage::list_files(self, owner, purpose)
    }

    fn file(&self, id: &str, owner: Option<&str>) -> Result<FileObject, Error> {
        Storage::file(self, id, owner)
    }

    fn content(&self, f: &FileObject) -> Result<Box<dyn Read + Send>, Error> {
        Ok(Box::new(std::fs::File::open(self.content_path(f))?))
    }

    fn delete_file(&self, id: &str, owner: Option<&str>) -> Result<FileObject, Error> {
        Storage::delete_file(self, id, owner)
    }

    fn create_batch(&self, new: &NewBatch<'_>) -> Result<Batch, Error> {
        Storage::create_batch(
            self,
            new.owner,
            new.endpoint,
            new.input_file_id,
            new.window_secs,
            new.window,
            new.metadata,
        )
    }

    fn batch(&self, id: &str, owner: Option<&str>) -> Result<Batch, Error> {
        Storage::batch(self, id, owner)
    }

    fn list_batches(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Batch>, bool), Error> {
        Storage::list_batches(self, owner, after, limit)
    }

    fn unfinished(&self) -> Result<Vec<Batch>, Error> {
        Storage::unfinished(self)
    }

    fn transition(&self, id: &str, from: &[BatchStatus], to: BatchStatus) -> Result<bool, Error> {
        Storage::transition(self, id, from, to)
    }

    fn fail_validation(&self, id: &str, problems: &[Value]) -> Result<(), Error> {
        Storage::fail_validation(self, id, problems)
    }

    fn start(&self, id: &str, items: &mut dyn Iterator<Item = Item>) -> Result<bool, Error> {
        self.start_items(id, items)
    }

    fn claim(&self, id: &str, holder: &str, n: usize, lease: Duration) -> Result<Vec<Item>, Error> {
        self.claim_items(id, holder, n, lease)
    }

    fn renew(&self, holder: &str, lease: Duration) -> Result<(), Error> {
        self.renew_items(holder, lease)
    }

    fn release(&self, holder: &str) -> Result<(), Error> {
        self.release_items(holder)
    }

    fn remaining(&self, id: &str) -> Result<u64, Error> {
        self.remaining_items(id)
    }

    fn record(&self, batch_id: &str, r: &ItemResult) -> Result<bool, Error> {
        Storage::record(self, batch_id, r)
    }

    fn finalize(&self, id: &str, to: BatchStatus) -> Result<Batch, Error> {
        Storage::finalize(self, id, to)
    }

    fn record_response(&self, id: &str, lane: &str, owner: &str) -> Result<(), Error> {
        Storage::record_response(self, id, lane, owner)
    }

    fn response_lane(&self, id: &str) -> Result<Option<(String, String)>, Error> {
        Storage::response_lane(self, id)
    }

    fn forget_response(&self, id: &str) -> Result<(), Error> {
        Storage::forget_response(self, id)
    }
}
