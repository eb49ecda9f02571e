//! The admin API (Bearer `server.admin_key`): see and act on what runs and what waits.
//! Off (404) when no admin key is configured, so an unconfigured gateway exposes nothing.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use laneway_core::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::json;

use crate::respond::Refusal;
use crate::views::{lane_views, positions, views};
use crate::{auth, control, App};
use laneway_engine::table::Entry;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/requests", get(requests))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/requests/{id}/stop", post(stop))
        .route("/stop-all", post(stop_all))
        .route("/clear-queue", post(clear_queue))
        .route("/lanes", get(lanes))
        .route(
            "/lanes/{name}",
            get(control::get_lane).patch(control::patch),
        )
        .route("/lanes/{name}/pause", post(control::pause))
        .route("/lanes/{name}/resume", post(control::resume))
        .route("/lanes/{name}/drain", post(control::drain))
        .route("/reload", post(reload))
}

async fn requests(State(app): State<Arc<App>>, req: Request) -> Result<Response, Refusal> {
    auth::admin(&app, req.headers())?;
    Ok(Json(views(&app)).into_response())
}

fn find(app: &App, id: &str) -> Result<Arc<Entry>, Refusal> {
    app.table.find(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no request `{id}` is in the gateway (it may have finished)"),
        )
        .into()
    })
}

async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, Refusal> {
    end_one(&app, &id, &req, false)
}

async fn stop(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, Refusal> {
    end_one(&app, &id, &req, true)
}

/// Cancels a queued request (`running = false`) or stops a running one; acting on a request in
/// the other state is a 409 that names the right verb.
fn end_one(app: &App, id: &str, req: &Request, running: bool) -> Result<Response, Refusal> {
    auth::admin(app, req.headers())?;
    let e = find(app, id)?;
    let (verb, other) = if running {
        ("stopped", "still queued: cancel")
    } else {
        ("cancelled", "already running: stop")
    };
    if e.is_running() != running {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("request `{id}` is {other} it instead"),
        )
        .into());
    }
    e.operator_cancel();
    Ok(Json(json!({verb: 1, "id": id})).into_response())
}

#[derive(Deserialize)]
pub struct LaneFilter {
    lane: Option<String>,
}

async fn stop_all(
    State(app): State<Arc<App>>,
    Query(f): Query<LaneFilter>,
    req: Request,
) -> Result<Response, Refusal> {
    auth::admin(&app, req.headers())?;
    let mut n = 0;
    for e in app.table.all() {
        if e.is_running()
            && f.lane
                .as_deref()
                .is_none_or(|l| e.lane().is_some_and(|x| x.as_str() == l))
            && !e.cancel.is_cancelled()
        {
            e.operator_cancel();
            n += 1;
        }
    }
    Ok(Json(json!({"stopped": n})).into_response())
}

async fn clear_queue(
    State(app): State<Arc<App>>,
    Query(f): Query<LaneFilter>,
    req: Request,
) -> Result<Response, Refusal> {
    auth::admin(&app, req.headers())?;
    let pos = positions(&app);
    let mut n = 0;
    for e in app.table.all() {
        let in_lane = match (&f.lane, pos.get(&e.tag)) {
            (None, _) => true,
            (Some(l), Some(s)) => s.lanes.iter().any(|p| p == l),
            (Some(_), None) => false,
        };
        if !e.is_running() && in_lane && !e.cancel.is_cancelled() {
            e.operator_cancel();
            n += 1;
        }
    }
    Ok(Json(json!({"cancelled": n})).into_response())
}

async fn lanes(State(app): State<Arc<App>>, req: Request) -> Result<Response, Refusal> {
    auth::admin(&app, req.headers())?;
    Ok(Json(lane_views(&app)).into_response())
}

async fn reload(State(app): State<Arc<App>>, req: Request) -> Result<Response, Refusal> {
    auth::admin(&app, req.headers())?;
    match app.reload().await {
        Ok(()) => Ok(
            Json(json!({"reloaded": true, "lanes": app.topo.load().lanes.len()})).into_response(),
        ),
        Err(msg) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the new configuration was refused; the old one stays:\n{msg}"),
        )
        .into()),
    }
}
