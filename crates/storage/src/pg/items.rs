//! A batch's items in PostgreSQL, leased to the replicas that run them (see
//! [`crate::store`]). A claim takes rows with `FOR UPDATE SKIP LOCKED`, so replicas claiming at
//! the same moment take different items instead of waiting on each other.

use std::time::Duration;

use super::{big, Postgres};
use crate::db::Error;
use crate::store::{claim_size, lease_ms, Item};

/// The database's clock in milliseconds: leases are read and written on one clock, whatever
/// the replicas' clocks say.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Items stored per statement when a batch starts.
const ROWS_PER_INSERT: usize = 500;

impl Postgres {
    pub(crate) fn start(
        &self,
        id: &str,
        items: &mut dyn Iterator<Item = Item>,
    ) -> Result<bool, Error> {
        // Taken from the file before the transaction: the connection is not held while the
        // content is read and parsed.
        let all: Vec<Item> = items.collect();
        let total = big(u64::try_from(all.len()).unwrap_or(u64::MAX));
        let extra = Duration::from_secs(u64::try_from(all.len() / 20_000).unwrap_or(0));
        self.inner.call_within(extra, |c| async move {
            c.batch_execute("BEGIN").await?;
            // Whoever starts the batch holds its row until the items are in.
            let status: Option<(String, i64)> = c
                .query_opt(
                    "SELECT status, items_loaded FROM batches WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await?
                .map(|r| Ok::<_, Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()?;
            let moving = match status {
                Some((s, _)) if s == "validating" => true,
                Some((s, 0)) if s == "in_progress" => false,
                _ => {
                    c.batch_execute("ROLLBACK").await?;
                    return Ok(false);
                }
            };
            for rows in all.chunks(ROWS_PER_INSERT) {
                let lines: Vec<i64> = rows.iter().map(|i| big(i.line)).collect();
                let ids: Vec<&str> = rows.iter().map(|i| i.custom_id.as_str()).collect();
                let bodies: Vec<&str> = rows.iter().map(|i| i.body.as_str()).collect();
                c.execute(
                    "INSERT INTO items (batch_id, custom_id, line, body) \
                     SELECT $1, u.c, u.l, u.b FROM unnest($2::text[], $3::bigint[], $4::text[]) AS u(c, l, b) \
                     WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.batch_id = $1 AND r.custom_id = u.c) \
                     ON CONFLICT DO NOTHING",
                    &[&id, &ids, &lines, &bodies],
                )
                .await?;
            }
            if moving {
                c.execute(
                    "UPDATE batches SET status = 'in_progress', in_progress_at = $1, total = $2, items_loaded = 1 WHERE id = $3",
                    &[&crate::now(), &total, &id],
                )
                .await?;
            } else {
                c.execute("UPDATE batches SET items_loaded = 1 WHERE id = $1", &[&id])
                    .await?;
            }
            c.batch_execute("COMMIT").await?;
            Ok(moving)
        })
    }

    pub(crate) fn claim(
        &self,
        id: &str,
        holder: &str,
        n: usize,
        lease: Duration,
    ) -> Result<Vec<Item>, Error> {
        let lease = lease_ms(lease);
        let n = claim_size(n);
        let sql = format!(
            "UPDATE items SET holder = $1, lease_until = {NOW_MS} + $2 FROM \
                 (SELECT custom_id FROM items WHERE batch_id = $3 AND (holder IS NULL OR lease_until <= {NOW_MS}) \
                  AND EXISTS (SELECT 1 FROM batches WHERE id = $3 AND status = 'in_progress') \
                  ORDER BY line LIMIT $4 FOR UPDATE SKIP LOCKED) AS free \
                 WHERE items.batch_id = $3 AND items.custom_id = free.custom_id \
                 RETURNING items.line, items.custom_id, items.body"
        );
        let rows = self
            .inner
            .call(|c| async move { Ok(c.query(&sql, &[&holder, &lease, &id, &n]).await?) })?;
        let mut items = rows
            .iter()
            .map(|r| {
                Ok(Item {
                    line: r.try_get::<_, i64>(0)?.max(0).unsigned_abs(),
                    custom_id: r.try_get(1)?,
                    body: r.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        items.sort_by_key(|i| i.line);
        Ok(items)
    }

    pub(crate) fn renew(&self, holder: &str, lease: Duration) -> Result<(), Error> {
        let lease = lease_ms(lease);
        let sql = format!("UPDATE items SET lease_until = {NOW_MS} + $1 WHERE holder = $2");
        self.inner.call(|c| async move {
            c.execute(&sql, &[&lease, &holder]).await?;
            Ok(())
        })
    }

    pub(crate) fn release(&self, holder: &str) -> Result<(), Error> {
        self.inner.call(|c| async move {
            c.execute(
                "UPDATE items SET holder = NULL, lease_until = 0 WHERE holder = $1",
                &[&holder],
            )
            .await?;
            Ok(())
        })
    }

    pub(crate) fn remaining(&self, id: &str) -> Result<u64, Error> {
        let row = self.inner.call(|c| async move {
            Ok(
                c.query_one("SELECT count(*) FROM items WHERE batch_id = $1", &[&id])
                    .await?,
            )
        })?;
        Ok(row.try_get::<_, i64>(0)?.max(0).unsigned_abs())
    }
}
