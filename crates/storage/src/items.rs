//! A batch's items in SQLite, each leased to the process running it (see [`crate::store`]).
//! One process owns a SQLite database, so leases matter only within it; they are kept all the
//! same so that SQLite and PostgreSQL run the same code path.

use std::time::Duration;

use rusqlite::params;

use crate::db::{Error, Storage};
use crate::store::{claim_size, lease_ms, now_ms, Item};

impl Storage {
    pub(crate) fn start_items(
        &self,
        id: &str,
        items: &mut dyn Iterator<Item = Item>,
    ) -> Result<bool, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut total = 0i64;
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO items (batch_id, custom_id, line, body) SELECT ?1, ?2, ?3, ?4 \
                 WHERE NOT EXISTS (SELECT 1 FROM results WHERE batch_id = ?1 AND custom_id = ?2)",
            )?;
            for item in items {
                total = total.saturating_add(1);
                let line = i64::try_from(item.line).unwrap_or(i64::MAX);
                insert.execute(params![id, item.custom_id, line, item.body])?;
            }
        }
        let moved = tx.execute(
            "UPDATE batches SET status = 'in_progress', in_progress_at = ?1, total = ?2, items_loaded = 1 \
             WHERE id = ?3 AND status = 'validating'",
            params![crate::now(), total, id],
        )?;
        let loaded = tx.execute(
            "UPDATE batches SET items_loaded = 1 WHERE id = ?1 AND status = 'in_progress' AND items_loaded = 0",
            params![id],
        )?;
        if moved == 0 && loaded == 0 {
            // Started by someone else in the meantime: their items stand.
            return Ok(false);
        }
        tx.commit()?;
        Ok(moved == 1)
    }

    pub(crate) fn claim_items(
        &self,
        id: &str,
        holder: &str,
        n: usize,
        lease: Duration,
    ) -> Result<Vec<Item>, Error> {
        let now = now_ms();
        let until = now.saturating_add(lease_ms(lease));
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "UPDATE items SET holder = ?1, lease_until = ?2 WHERE batch_id = ?3 AND custom_id IN \
             (SELECT custom_id FROM items WHERE batch_id = ?3 AND (holder IS NULL OR lease_until <= ?4) \
              AND EXISTS (SELECT 1 FROM batches WHERE id = ?3 AND status = 'in_progress') \
              ORDER BY line LIMIT ?5) \
             RETURNING line, custom_id, body",
        )?;
        let rows = stmt.query_map(params![holder, until, id, now, claim_size(n)], |r| {
            Ok(Item {
                line: r.get::<_, i64>(0)?.max(0).unsigned_abs(),
                custom_id: r.get(1)?,
                body: r.get(2)?,
            })
        })?;
        let mut items: Vec<Item> = rows.collect::<Result<_, _>>()?;
        items.sort_by_key(|i| i.line);
        Ok(items)
    }

    pub(crate) fn renew_items(&self, holder: &str, lease: Duration) -> Result<(), Error> {
        let until = now_ms().saturating_add(lease_ms(lease));
        self.conn().execute(
            "UPDATE items SET lease_until = ?1 WHERE holder = ?2",
            params![until, holder],
        )?;
        Ok(())
    }

    pub(crate) fn release_items(&self, holder: &str) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE items SET holder = NULL, lease_until = 0 WHERE holder = ?1",
            params![holder],
        )?;
        Ok(())
    }

    pub(crate) fn remaining_items(&self, id: &str) -> Result<u64, Error> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM items WHERE batch_id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        Ok(n.max(0).unsigned_abs())
    }
}
