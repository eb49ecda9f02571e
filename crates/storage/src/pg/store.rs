//! [`Store`] on PostgreSQL: every call goes to the queries of this module's siblings.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use super::Postgres;
use crate::batches::{Batch, BatchStatus, ItemResult};
use crate::db::Error;
use crate::files::{FileObject, Upload};
use crate::store::{Item, NewBatch, Store};

impl Store for Postgres {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn begin_upload(&self) -> Result<Upload, Error> {
        Postgres::begin_upload(self)
    }

    fn keep_upload(
        &self,
        up: Upload,
        owner: &str,
        filename: &str,
        purpose: &str,
    ) -> Result<FileObject, Error> {
        Postgres::keep_upload(self, up, owner, filename, purpose)
    }

    fn list_files(
        &self,
        owner: Option<&str>,
        purpose: Option<&str>,
    ) -> Result<Vec<FileObject>, Error> {
        Postgres::list_files(self, owner, purpose)
    }

    fn file(&self, id: &str, owner: Option<&str>) -> Result<FileObject, Error> {
        Postgres::file(self, id, owner)
    }

    fn content(&self, f: &FileObject) -> Result<Box<dyn Read + Send>, Error> {
        Ok(Postgres::content(self, f))
    }

    fn delete_file(&self, id: &str, owner: Option<&str>) -> Result<FileObject, Error> {
        Postgres::delete_file(self, id, owner)
    }

    fn create_batch(&self, new: &NewBatch<'_>) -> Result<Batch, Error> {
        Postgres::create_batch(self, new)
    }

    fn batch(&self, id: &str, owner: Option<&str>) -> Result<Batch, Error> {
        Postgres::batch(self, id, owner)
    }

    fn list_batches(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Batch>, bool), Error> {
        Postgres::list_batches(self, owner, after, limit)
    }

    fn unfinished(&self) -> Result<Vec<Batch>, Error> {
        Postgres::unfinished(self)
    }

    fn transition(&self, id: &str, from: &[BatchStatus], to: BatchStatus) -> Result<bool, Error> {
        Postgres::transition(self, id, from, to)
    }

    fn fail_validation(&self, id: &str, problems: &[Value]) -> Result<(), Error> {
        Postgres::fail_validation(self, id, problems)
    }

    fn start(&self, id: &str, items: &mut dyn Iterator<Item = Item>) -> Result<bool, Error> {
        Postgres::start(self, id, items)
    }

    fn claim(&self, id: &str, holder: &str, n: usize, lease: Duration) -> Result<Vec<Item>, Error> {
        Postgres::claim(self, id, holder, n, lease)
    }

    fn renew(&self, holder: &str, lease: Duration) -> Result<(), Error> {
        Postgres::renew(self, holder, lease)
    }

    fn release(&self, holder: &str) -> Result<(), Error> {
        Postgres::release(self, holder)
    }

    fn remaining(&self, id: &str) -> Result<u64, Error> {
        Postgres::remaining(self, id)
    }

    fn record(&self, batch_id: &str, r: &ItemResult) -> Result<bool, Error> {
        Postgres::record(self, batch_id, r)
    }

    fn finalize(&self, id: &str, to: BatchStatus) -> Result<Batch, Error> {
        Postgres::finalize(self, id, to)
    }

    fn record_response(&self, id: &str, lane: &str, owner: &str) -> Result<(), Error> {
        Postgres::record_response(self, id, lane, owner)
    }

    fn response_lane(&self, id: &str) -> Result<Option<(String, String)>, Error> {
        Postgres::response_lane(self, id)
    }

    fn forget_response(&self, id: &str) -> Result<(), Error> {
        Postgres::forget_response(self, id)
    }
}
