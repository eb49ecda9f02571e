//! Which lane made each Responses API id: a response lives in the provider account that made
//! it, so `previous_response_id` and every `/v1/responses/{id}` call must reach that lane, also
//! after a restart. Kept in the same database as the Batch API, bounded to the newest
//! [`KEPT`] ids.

use rusqlite::{params, OptionalExtension};

use crate::db::{Error, Storage};

/// Ids remembered at most; older ones are forgotten (their calls then answer 404).
pub const KEPT: i64 = 1_000_000;

impl Storage {
    /// Records that `lane` made response `id` for the key `owner`.
    pub fn record_response(&self, id: &str, lane: &str, owner: &str) -> Result<(), Error> {
        let conn = self.conn();
        let inserted = conn.execute(
            "INSERT OR REPLACE INTO response_lanes (id, lane, owner, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, lane, owner, crate::now()],
        )?;
        // Prune now and then, not on every insert.
        if inserted > 0 && conn.last_insert_rowid() % 1024 == 0 {
            conn.execute(
                "DELETE FROM response_lanes WHERE rowid <= (SELECT max(rowid) FROM response_lanes) - ?1",
                params![KEPT],
            )?;
        }
        Ok(())
    }

    /// The lane that made response `id`, and the key it was made for.
    pub fn response_lane(&self, id: &str) -> Result<Option<(String, String)>, Error> {
        Ok(self
            .conn()
            .query_row(
                "SELECT lane, owner FROM response_lanes WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Forgets response `id` (after the upstream deleted it).
    pub fn forget_response(&self, id: &str) -> Result<(), Error> {
        self.conn()
            .execute("DELETE FROM response_lanes WHERE id = ?1", params![id])?;
        Ok(())
    }
}
