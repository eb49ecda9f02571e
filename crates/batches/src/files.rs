//! `/v1/files`: uploads streamed to disk as they arrive (a 200 MB file never sits in memory),
//! listing, metadata, content and deletion. A key sees only its own files.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use laneway_core::{ApiError, ErrorCode};
use laneway_storage::files::Upload;
use laneway_storage::Store;
use serde::Deserialize;
use serde_json::json;

use super::api::{caller, reading, Caller};
use super::blocking;
use crate::Api as App;

fn fail(e: ApiError) -> Response {
    laneway_engine::render::response(&e).map(axum::body::Body::from)
}

/// Longest `purpose` field read.
const MAX_FIELD: usize = 64;

/// Purposes a file may be uploaded with; only `batch` files feed batches.
const PURPOSES: [&str; 4] = ["batch", "fine-tune", "assistants", "user_data"];

/// `POST /v1/files` (multipart: `purpose`, `file`).
pub async fn upload(State(app): State<Arc<App>>, req: Request) -> Response {
    let owner = match caller(&app, req.headers()) {
        Ok(Caller::Key(k)) => k,
        Ok(Caller::Admin) => return fail(ApiError::new(
            ErrorCode::InvalidRequest,
            "files belong to a client key; upload them with a key from [[key]], not the admin key",
        )),
        Err(e) => return fail(e),
    };
    let storage = match app.batches.storage().await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let idle = app.engine.topo.load().config.server.body_timeout;
    match receive(req, &storage, idle).await {
        Ok((upload, filename, purpose)) => {
            let done = blocking(&storage, move |s| {
                s.keep_upload(upload, &owner, &filename, &purpose)
            })
            .await;
            match done {
                Ok(f) => Json(f.to_json()).into_response(),
                Err(e) => fail(e),
            }
        }
        Err(e) => {
            let mut r = fail(e);
            // The rest of the body was not read: the connection cannot carry another request.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

/// Reads the form: the file streamed through a writer thread into storage, the purpose checked.
async fn receive(
    req: Request,
    storage: &Arc<dyn Store>,
    idle: std::time::Duration,
) -> Result<(Upload, String, String), ApiError> {
    let mut form = Multipart::from_request(req, &()).await.map_err(|e| {
        invalid(format!(
            "the body is not a multipart form: {}",
            e.body_text()
        ))
    })?;
    let mut purpose = None;
    let mut file = None;
    loop {
        let field = tokio::time::timeout(idle, form.next_field())
            .await
            .map_err(|_| timed_out(idle))?
            .map_err(|e| {
                invalid(format!(
                    "the multipart form is malformed: {}",
                    e.body_text()
                ))
            })?;
        let Some(mut field) = field else { break };
        match field.name() {
            Some("purpose") => purpose = Some(read_purpose(&mut field, idle).await?),
            Some("file") if file.is_none() => {
                let name = field.file_name().unwrap_or("upload.jsonl").to_owned();
                file = Some((store_file(&mut field, storage, idle).await?, name));
            }
            _ => {}
        }
    }
    let purpose = purpose
        .ok_or_else(|| invalid("the form has no `purpose` field".into()).with_param("purpose"))?;
    if !PURPOSES.contains(&purpose.as_str()) {
        return Err(invalid(format!(
            "purpose `{purpose}` is not one of {}",
            PURPOSES.join(", ")
        ))
        .with_param("purpose"));
    }
    let (up, name) =
        file.ok_or_else(|| invalid("the form has no `file` field".into()).with_param("file"))?;
    if up.bytes() == 0 {
        return Err(invalid("the file is empty".into()).with_param("file"));
    }
    Ok((up, name, purpose))
}

/// The `purpose` field, read within a bound (the upload route has no body limit).
async fn read_purpose(
    field: &mut axum::extract::multipart::Field<'_>,
    idle: std::time::Duration,
) -> Result<String, ApiError> {
    let mut text = Vec::new();
    loop {
        let chunk = tokio::time::timeout(idle, field.chunk())
            .await
            .map_err(|_| timed_out(idle))?
            .map_err(|e| invalid(format!("could not read `purpose`: {}", e.body_text())))?;
        let Some(chunk) = chunk else { break };
        if text.len() + chunk.len() > MAX_FIELD {
            return Err(
                invalid(format!("`purpose` is longer than {MAX_FIELD} bytes"))
                    .with_param("purpose"),
            );
        }
        text.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&text).trim().to_owned())
}

/// The `file` field, streamed through a writer thread into storage.
async fn store_file(
    field: &mut axum::extract::multipart::Field<'_>,
    storage: &Arc<dyn Store>,
    idle: std::time::Duration,
) -> Result<Upload, ApiError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let s = storage.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut up = s.begin_upload()?;
        while let Some(chunk) = rx.blocking_recv() {
            up.write(&chunk)?;
        }
        Ok::<_, laneway_storage::Error>(up)
    });
    loop {
        let chunk = tokio::time::timeout(idle, field.chunk())
            .await
            .map_err(|_| timed_out(idle))?
            .map_err(|e| invalid(format!("the upload broke off: {}", e.body_text())))?;
        let Some(chunk) = chunk else { break };
        // The writer stopped (too large, disk full): its error says why.
        if tx.send(chunk).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| super::storage_error(&e))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

fn timed_out(idle: std::time::Duration) -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        format!(
            "the upload paused for longer than {} (server.body_timeout)",
            laneway_core::duration::openai_format(idle)
        ),
    )
}

#[derive(Deserialize)]
pub struct ListQuery {
    purpose: Option<String>,
}

/// `GET /v1/files?purpose=`.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let owner = match caller(&app, &headers) {
        Ok(c) => c.owner(),
        Err(e) => return fail(e),
    };
    let listed = match app.batches.existing().await {
        Ok(Some(storage)) => {
            blocking(&storage, move |s| {
                s.list_files(owner.as_deref(), q.purpose.as_deref())
            })
            .await
        }
        Ok(None) => Ok(Vec::new()),
        Err(e) => return fail(e),
    };
    match listed {
        Ok(files) => {
            let data: Vec<_> = files
                .iter()
                .map(laneway_storage::FileObject::to_json)
                .collect();
            Json(json!({"object": "list", "data": data, "has_more": false})).into_response()
        }
        Err(e) => fail(e),
    }
}

/// `GET /v1/files/{id}`.
pub async fn get(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (owner, storage) = match reading(&app, &headers, "file", &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match blocking(&storage, move |s| s.file(&id, owner.as_deref())).await {
        Ok(f) => Json(f.to_json()).into_response(),
        Err(e) => fail(e),
    }
}

/// `DELETE /v1/files/{id}`.
pub async fn delete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (owner, storage) = match reading(&app, &headers, "file", &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match blocking(&storage, move |s| s.delete_file(&id, owner.as_deref())).await {
        Ok(f) => Json(json!({"id": f.id, "object": "file", "deleted": true})).into_response(),
        Err(e) => fail(e),
    }
}

/// `GET /v1/files/{id}/content`: streamed from the store as it is read.
pub async fn content(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (owner, storage) = match reading(&app, &headers, "file", &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let opened = blocking(&storage, move |s| {
        let f = s.file(&id, owner.as_deref())?;
        Ok((s.content(&f)?, f.bytes))
    })
    .await;
    match opened {
        Ok((mut reader, bytes)) => {
            // A blocking thread copies the content into a pipe the body reads; a client that
            // goes away closes the pipe and ends the copy.
            let (rx, tx) = tokio::io::duplex(64 << 10);
            tokio::task::spawn_blocking(move || {
                let mut tx = tokio_util::io::SyncIoBridge::new(tx);
                if let Err(e) = std::io::copy(&mut reader, &mut tx) {
                    tracing::debug!(error = %e, "a file download ended early");
                }
            });
            let stream = tokio_util::io::ReaderStream::new(rx);
            let mut r = Response::new(Body::from_stream(stream));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes));
            r
        }
        Err(e) => fail(e),
    }
}
