//! Files: uploads streamed to disk (never whole in memory), renamed into place only once
//! complete, then recorded; a file is either fully there or not at all.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use rusqlite::{params, OptionalExtension, Row};
use serde_json::{json, Value};

use crate::batches::object::Cols;
use crate::db::{Error, Storage};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObject {
    pub id: String,
    pub owner: String,
    pub filename: String,
    pub purpose: String,
    pub bytes: u64,
    pub created_at: i64,
}

impl FileObject {
    /// OpenAI's file object.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": null,
        })
    }

    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Self::from_cols(r)
    }

    /// A file from a row of [`COLUMNS`].
    pub(crate) fn from_cols<R: Cols>(r: &R) -> Result<Self, R::E> {
        let text = |i: usize| -> Result<String, R::E> { Ok(r.text(i)?.unwrap_or_default()) };
        Ok(Self {
            id: text(0)?,
            owner: text(1)?,
            filename: text(2)?,
            purpose: text(3)?,
            bytes: r.int(4)?.unwrap_or(0).max(0).unsigned_abs(),
            created_at: r.int(5)?.unwrap_or(0),
        })
    }
}

pub(crate) const COLUMNS: &str = "id, owner, filename, purpose, bytes, created_at";

/// A file being written: bytes go to `files/{id}.part`; dropped unfinished, it is removed.
pub struct Upload {
    id: String,
    part: PathBuf,
    file: Option<File>,
    bytes: u64,
    limit: u64,
}

impl Upload {
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        self.bytes = self.bytes.saturating_add(len);
        if self.bytes > self.limit {
            return Err(Error::TooLarge(
                usize::try_from(self.limit).unwrap_or(usize::MAX),
            ));
        }
        match &mut self.file {
            Some(f) => Ok(f.write_all(chunk)?),
            None => Err(Error::Invalid("the upload was already finished".into())),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes the file durable, moves it into place and records it.
    pub fn finish(
        mut self,
        s: &Storage,
        owner: &str,
        filename: &str,
        purpose: &str,
    ) -> Result<FileObject, Error> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        let path = s.file_path(&self.id);
        std::fs::rename(&self.part, &path)?;
        let f = FileObject {
            id: self.id.clone(),
            owner: owner.to_owned(),
            filename: filename.to_owned(),
            purpose: purpose.to_owned(),
            bytes: self.bytes,
            created_at: crate::now(),
        };
        let inserted = s.conn().execute(
            &format!("INSERT INTO files ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                f.id,
                f.owner,
                f.filename,
                f.purpose,
                i64::try_from(f.bytes).unwrap_or(i64::MAX),
                f.created_at
            ],
        );
        if let Err(e) = inserted {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        Ok(f)
    }
}

impl Upload {
    /// Makes the file durable and moves it into place without recording it: the caller records
    /// it in its own transaction (batch output files).
    pub(crate) fn finish_unrecorded(
        mut self,
        s: &Storage,
        owner: &str,
        filename: &str,
    ) -> Result<FileObject, Error> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        std::fs::rename(&self.part, s.file_path(&self.id))?;
        Ok(FileObject {
            id: self.id.clone(),
            owner: owner.to_owned(),
            filename: filename.to_owned(),
            purpose: "batch_output".to_owned(),
            bytes: self.bytes,
            created_at: crate::now(),
        })
    }
}

impl Upload {
    /// An upload spooled to `part`, a fresh private file.
    pub(crate) fn spool(id: String, part: PathBuf, file: File, limit: u64) -> Self {
        Self {
            id,
            part,
            file: Some(file),
            bytes: 0,
            limit,
        }
    }

    /// The finished spool file, for a store that copies it elsewhere; removed when dropped.
    pub(crate) fn into_spooled(mut self) -> Result<Spooled, Error> {
        if let Some(mut f) = self.file.take() {
            f.flush()?;
        }
        Ok(Spooled {
            id: std::mem::take(&mut self.id),
            path: std::mem::take(&mut self.part),
            bytes: self.bytes,
        })
    }
}

/// A finished upload's spool file.
pub(crate) struct Spooled {
    pub id: String,
    pub path: PathBuf,
    pub bytes: u64,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

impl Storage {
    /// Starts an upload limited to `storage.max_file_size`.
    pub fn begin_upload(&self) -> Result<Upload, Error> {
        let id = crate::new_id("file-");
        let part = self.file_path(&format!("{id}.part"));
        let file = crate::private::create_file(&part)?;
        let limit = u64::try_from(self.max_file_size).unwrap_or(u64::MAX);
        Ok(Upload::spool(id, part, file, limit))
    }

    /// Files `owner` may see (all of them for `None`, the admin), newest first.
    pub fn list_files(
        &self,
        owner: Option<&str>,
        purpose: Option<&str>,
    ) -> Result<Vec<FileObject>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM files WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR purpose = ?2) \
             ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt.query_map(params![owner, purpose], FileObject::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One file, if it exists and `owner` may see it.
    pub fn file(&self, id: &str, owner: Option<&str>) -> Result<FileObject, Error> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM files WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)"
                ),
                params![id, owner],
                FileObject::from_row,
            )
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("no file with id `{id}`")))
    }

    /// Where a file's content is, once [`Storage::file`] said it may be read.
    pub fn content_path(&self, f: &FileObject) -> PathBuf {
        self.file_path(&f.id)
    }

    pub fn delete_file(&self, id: &str, owner: Option<&str>) -> Result<FileObject, Error> {
        let f = self.file(id, owner)?;
        self.conn()
            .execute("DELETE FROM files WHERE id = ?1", params![id])?;
        let _ = std::fs::remove_file(self.file_path(id));
        Ok(f)
    }
}
