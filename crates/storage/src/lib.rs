//! Durable storage for the Batch API and the response-id record, behind one trait
//! ([`Store`]): SQLite (WAL mode) under `[storage] path` for one machine, each file's content
//! in `files/` beside it; or PostgreSQL under `[storage] url` for a fleet, contents in the
//! database. Every finished batch item is recorded once by its `custom_id`, so a gateway killed
//! at any moment resumes without losing or repeating an item.
//!
//! Everything here is blocking (SQL and file I/O); the gateway calls it from
//! `spawn_blocking`. One connection behind a mutex serialises writers, which SQLite does anyway.
//!
//! # Layout
//! - `db`: opening, the schema, and the error type.
//! - [`files`]: uploads streamed to disk, listing, reading, deleting.
//! - [`batches`]: batches, their lifecycle, item results and the output files.
//! - [`validate`]: checking a batch input file line by line.
//! - [`store`]: the trait; `sqlite` and `pg` its two engines; `items`: SQLite's item leases.

pub mod batches;
mod db;
pub mod files;
mod items;
mod pg;
pub mod private;
#[cfg(all(test, unix))]
mod private_tests;
mod responses;
mod sqlite;
pub mod store;
#[cfg(test)]
mod tests;
pub mod validate;

pub use batches::{Batch, BatchStatus, Counts, ItemResult};
pub use db::{sqlite_version, Error, Storage, SCHEMA_VERSION};
pub use files::FileObject;
pub use pg::schema::VERSION as POSTGRES_SCHEMA_VERSION;
pub use pg::Postgres;
pub use store::{Item, NewBatch, Store};

/// Seconds since the Unix epoch, as OpenAI's objects carry them.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A fresh id with OpenAI's look: `file-…`, `batch_…`.
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    // From the OS's random source: ids are handed to clients. A byte below 248 (4 × 62) picks a
    // letter by its remainder and the few above are dropped, so every letter is equally likely.
    let mut tail = String::with_capacity(24);
    let mut bytes = [0u8; 48];
    while tail.len() < 24 {
        laneway_core::id::random_bytes(&mut bytes);
        for &b in &bytes {
            if tail.len() < 24 && usize::from(b) < 4 * ALPHABET.len() {
                tail.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    format!("{prefix}{tail}")
}
