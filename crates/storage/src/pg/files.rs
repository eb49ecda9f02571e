//! Files in PostgreSQL: an upload is spooled to a private local file while it arrives, then
//! copied into `file_chunks` (1 MiB rows) and recorded in one transaction, so every replica
//! sees all of a file or none of it. Content is read back one chunk at a time.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use tokio_postgres::types::ToSql;

use super::{big, Inner, Postgres};
use crate::db::Error;
use crate::files::{FileObject, Upload, COLUMNS};

/// Bytes per content row.
pub(crate) const CHUNK: usize = 1 << 20;

impl Postgres {
    pub(crate) fn begin_upload(&self) -> Result<Upload, Error> {
        let id = crate::new_id("file-");
        let part = self.inner.spool.join(format!("{id}.part"));
        let file = crate::private::create_file(&part)?;
        let limit = u64::try_from(self.inner.max_file_size).unwrap_or(u64::MAX);
        Ok(Upload::spool(id, part, file, limit))
    }

    pub(crate) fn keep_upload(
        &self,
        up: Upload,
        owner: &str,
        filename: &str,
        purpose: &str,
    ) -> Result<FileObject, Error> {
        let spooled = up.into_spooled()?;
        let mut source = std::fs::File::open(&spooled.path)?;
        let f = FileObject {
            id: spooled.id.clone(),
            owner: owner.to_owned(),
            filename: filename.to_owned(),
            purpose: purpose.to_owned(),
            bytes: spooled.bytes,
            created_at: crate::now(),
        };
        let row = f.clone();
        // Large files take longer than an ordinary call: a second per 10 MiB on top.
        let extra = std::time::Duration::from_secs(spooled.bytes / (10 << 20));
        self.inner.call_within(extra, |c| async move {
            c.batch_execute("BEGIN").await?;
            insert_file(&c, &row).await?;
            put_chunks(&c, &row.id, &mut source).await?;
            c.batch_execute("COMMIT").await?;
            Ok(())
        })?;
        Ok(f)
    }

    pub(crate) fn list_files(
        &self,
        owner: Option<&str>,
        purpose: Option<&str>,
    ) -> Result<Vec<FileObject>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE ($1::text IS NULL OR owner = $1) AND ($2::text IS NULL OR purpose = $2) \
             ORDER BY created_at DESC, id"
        );
        let rows = self
            .inner
            .call(|c| async move { Ok(c.query(&sql, &[&owner, &purpose]).await?) })?;
        rows.iter().map(FileObject::from_cols).collect()
    }

    pub(crate) fn file(&self, id: &str, owner: Option<&str>) -> Result<FileObject, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE id = $1 AND ($2::text IS NULL OR owner = $2)"
        );
        let row = self
            .inner
            .call(|c| async move { Ok(c.query_opt(&sql, &[&id, &owner]).await?) })?;
        match row {
            Some(r) => FileObject::from_cols(&r),
            None => Err(Error::NotFound(format!("no file with id `{id}`"))),
        }
    }

    pub(crate) fn content(&self, f: &FileObject) -> Box<dyn Read + Send> {
        Box::new(Chunks {
            inner: self.inner.clone(),
            file_id: f.id.clone(),
            next: 0,
            current: Bytes::new(),
        })
    }

    pub(crate) fn delete_file(&self, id: &str, owner: Option<&str>) -> Result<FileObject, Error> {
        let f = self.file(id, owner)?;
        self.inner.call(|c| async move {
            c.execute("DELETE FROM files WHERE id = $1", &[&id]).await?;
            Ok(())
        })?;
        Ok(f)
    }
}

/// Records a file's row (inside the caller's transaction).
pub(crate) async fn insert_file(c: &tokio_postgres::Client, f: &FileObject) -> Result<(), Error> {
    let params: [&(dyn ToSql + Sync); 6] = [
        &f.id,
        &f.owner,
        &f.filename,
        &f.purpose,
        &big(f.bytes),
        &f.created_at,
    ];
    c.execute(
        &format!("INSERT INTO files ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &params,
    )
    .await?;
    Ok(())
}

/// Stores a file's content rows from `source`, read a chunk at a time (inside the caller's
/// transaction; the read blocks the calling thread, which is a blocking one).
pub(crate) async fn put_chunks(
    c: &tokio_postgres::Client,
    id: &str,
    source: &mut dyn Read,
) -> Result<(), Error> {
    let insert = c
        .prepare("INSERT INTO file_chunks (file_id, seq, data) VALUES ($1, $2, $3)")
        .await?;
    let mut chunk = Vec::with_capacity(CHUNK);
    for seq in 0i32.. {
        chunk.clear();
        source
            .take(u64::try_from(CHUNK).unwrap_or(u64::MAX))
            .read_to_end(&mut chunk)?;
        if chunk.is_empty() {
            break;
        }
        c.execute(&insert, &[&id, &seq, &chunk]).await?;
    }
    Ok(())
}

/// A file's content, one chunk fetched at a time as it is read.
struct Chunks {
    inner: Arc<Inner>,
    file_id: String,
    next: i32,
    current: Bytes,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.current.is_empty() {
            let (id, seq) = (self.file_id.as_str(), self.next);
            let row = self
                .inner
                .call(|c| async move {
                    Ok(c.query_opt(
                        "SELECT data FROM file_chunks WHERE file_id = $1 AND seq = $2",
                        &[&id, &seq],
                    )
                    .await?)
                })
                .map_err(std::io::Error::other)?;
            let Some(row) = row else { return Ok(0) };
            let data: Vec<u8> = row.try_get(0).map_err(std::io::Error::other)?;
            self.current = Bytes::from(data);
            self.next = self.next.saturating_add(1);
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
