//! `/v1/batches` and `/admin/batches`: OpenAI's batch objects over the stored batches. A key
//! sees only its own batches; the admin key sees (and may cancel) every key's.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use laneway_core::wire::Endpoint;
use laneway_core::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{blocking, run};
use crate::Api as App;

/// Who is calling the Batch API.
pub(crate) enum Caller {
    Admin,
    Key(String),
}

impl Caller {
    /// The owner to filter by: none for the admin.
    pub(crate) fn owner(&self) -> Option<String> {
        match self {
            Self::Admin => None,
            Self::Key(k) => Some(k.clone()),
        }
    }
}

/// The admin key, else a client key (the anonymous one on a gateway without keys).
pub(crate) fn caller(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let topo = app.engine.topo.load();
    if topo.admin_key().is_some()
        && laneway_engine::auth::admin(&app.engine.topo.load(), headers).is_ok()
    {
        return Ok(Caller::Admin);
    }
    let key = laneway_engine::auth::client_key(&topo, headers)?;
    Ok(Caller::Key(key.name().to_owned()))
}

fn fail(e: ApiError) -> Response {
    laneway_engine::render::response(&e).map(axum::body::Body::from)
}

/// For a handler reading one file or batch: the owner to filter by (none for the admin) and
/// the storage; nothing stored yet reads as "no such `what`".
pub(crate) async fn reading(
    app: &App,
    headers: &HeaderMap,
    what: &str,
    id: &str,
) -> Result<(Option<String>, Arc<dyn laneway_storage::Store>), Response> {
    let owner = caller(app, headers).map_err(fail)?.owner();
    match app.batches.existing().await {
        Ok(Some(s)) => Ok((owner, s)),
        Ok(None) => Err(fail(ApiError::new(
            ErrorCode::NotFound,
            format!("no {what} with id `{id}`"),
        ))),
        Err(e) => Err(fail(e)),
    }
}

#[derive(Deserialize)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<Value>,
}

/// The longest completion window accepted.
const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

fn bad(message: String, param: &'static str) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message).with_param(param)
}

fn parse_create(body: &[u8]) -> Result<(CreateBatch, Duration), ApiError> {
    let c: CreateBatch = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the body is not a batch request: {e}"),
        )
    })?;
    if !Endpoint::from_path(&c.endpoint).is_some_and(batchable) {
        return Err(bad(
            format!(
                "endpoint `{}` cannot be batched; use /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses or /v1/moderations",
                c.endpoint
            ),
            "endpoint",
        ));
    }
    let window = laneway_core::duration::parse(&c.completion_window)
        .filter(|d| !d.is_zero() && *d <= MAX_WINDOW)
        .ok_or_else(|| {
            bad(
                format!(
                    "completion_window `{}` is not a duration like \"24h\" (at most 30 days)",
                    c.completion_window
                ),
                "completion_window",
            )
        })?;
    match &c.metadata {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.len() <= 16 && m.iter().all(|(k, v)| k.len() <= 64 && v.as_str().is_some_and(|s| s.len() <= 512)) => {}
        Some(_) => {
            return Err(bad(
                "metadata must be an object of at most 16 string values (keys up to 64, values up to 512 characters)".into(),
                "metadata",
            ))
        }
    }
    Ok((c, window))
}

/// `POST /v1/batches`: checks the request and the file, stores the batch as `validating` and
/// starts it; the file is then checked line by line before any item runs.
pub async fn create(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let owner = match caller(&app, &headers) {
        Ok(Caller::Key(k)) => k,
        Ok(Caller::Admin) => return fail(ApiError::new(
            ErrorCode::InvalidRequest,
            "batches run as a client key; create them with a key from [[key]], not the admin key",
        )),
        Err(e) => return fail(e),
    };
    let (c, window) = match parse_create(&body) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let storage = match app.batches.storage().await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let created = blocking(&storage, move |s| {
        let f = s.file(&c.input_file_id, Some(&owner))?;
        if f.purpose != "batch" {
            return Err(laneway_storage::Error::Invalid(format!(
                "file `{}` has purpose `{}`; a batch reads a file uploaded with purpose `batch`",
                f.id, f.purpose
            )));
        }
        s.create_batch(&laneway_storage::NewBatch {
            owner: &owner,
            endpoint: &c.endpoint,
            input_file_id: &f.id,
            window_secs: i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
            window: &c.completion_window,
            metadata: c.metadata.as_ref(),
        })
    })
    .await;
    match created {
        Ok(b) => {
            run::launch(&app, storage, b.id.clone());
            Json(b.to_json()).into_response()
        }
        Err(e) => fail(e),
    }
}

/// `GET /v1/batches/{id}`.
pub async fn retrieve(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (owner, storage) = match reading(&app, &headers, "batch", &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match blocking(&storage, move |s| s.batch(&id, owner.as_deref())).await {
        Ok(b) => Json(b.to_json()).into_response(),
        Err(e) => fail(e),
    }
}

/// `POST /v1/batches/{id}/cancel`: no new items start; running ones finish and the batch ends
/// `cancelled` with what finished in its output file.
pub async fn cancel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (owner, storage) = match reading(&app, &headers, "batch", &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let owned = id.clone();
    match blocking(&storage, move |s| s.cancel(&owned, owner.as_deref())).await {
        Ok(b) => {
            app.batches.stop_batch(&id);
            // A batch no task drives here (its process died) is ended by a new one.
            run::launch(&app, storage, id);
            Json(b.to_json()).into_response()
        }
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
pub struct Page {
    after: Option<String>,
    /// Read as text and parsed here, so that `limit=-1` is told as the range it must be in
    /// rather than as serde's "invalid digit".
    limit: Option<String>,
}

/// `GET /v1/batches?after=&limit=`: newest first, 20 by default, at most 100.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Response {
    let owner = match caller(&app, &headers) {
        Ok(c) => c.owner(),
        Err(e) => return fail(e),
    };
    listing(&app, owner, page, false).await
}

/// `GET /admin/batches`: every key's batches with their owner and progress.
pub async fn admin_list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Response {
    if let Err(e) = laneway_engine::auth::admin(&app.engine.topo.load(), &headers) {
        return fail(e);
    }
    listing(&app, None, page, true).await
}

async fn listing(app: &Arc<App>, owner: Option<String>, page: Page, admin: bool) -> Response {
    let limit = match page.limit.as_deref().map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n @ 1..=100)) => n,
        Some(_) => {
            let got = page.limit.as_deref().unwrap_or_default();
            let msg = format!("limit must be a whole number from 1 to 100, got `{got}`");
            return fail(bad(msg, "limit"));
        }
    };
    let listed = match app.batches.existing().await {
        Ok(Some(storage)) => {
            blocking(&storage, move |s| {
                s.list_batches(owner.as_deref(), page.after.as_deref(), limit)
            })
            .await
        }
        Ok(None) => Ok((Vec::new(), false)),
        Err(e) => return fail(e),
    };
    let (batches, more) = match listed {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let data: Vec<Value> = batches
        .iter()
        .map(|b| {
            let mut v = b.to_json();
            if admin {
                v["owner"] = json!(b.owner);
                v["progress"] = app.batches.progress(b);
            }
            v
        })
        .collect();
    Json(json!({
        "object": "list",
        "first_id": batches.first().map(|b| &b.id),
        "last_id": batches.last().map(|b| &b.id),
        "has_more": more,
        "data": data,
    }))
    .into_response()
}

/// The endpoints OpenAI's Batch API takes; answers of the others (audio, images) are not
/// lines of JSON.
pub(crate) fn batchable(e: Endpoint) -> bool {
    matches!(
        e,
        Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses
            | Endpoint::Moderations
    )
}
