//! The admin API (Bearer `server.admin_key`): see and act on what runs and what waits.
//! Off (404) when no admin key is configured, so an unconfigured gateway exposes nothing.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use laneway_core::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::fleet::Action;
use crate::respond::Refusal;
use crate::views::{fleet_lane_views, fleet_views, positions};
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
    Ok(Json(fleet_views(&app)).into_response())
}

fn find(app: &App, id: &str) -> Result<Arc<Entry>, ApiError> {
    app.table.find(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no request `{id}` is in the gateway (it may have finished)"),
        )
    })
}

async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, Refusal> {
    auth::admin(&app, req.headers())?;
    end_one(&app, &id, false).await
}

async fn stop(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, Refusal> {
    auth::admin(&app, req.headers())?;
    end_one(&app, &id, true).await
}

fn verbs(running: bool) -> (&'static str, &'static str) {
    if running {
        ("stopped", "still queued: cancel")
    } else {
        ("cancelled", "already running: stop")
    }
}

/// Cancels a queued request (`running = false`) or stops a running one, here or on the
/// replica of the fleet that holds it; acting on a request in the other state is a 409 that
/// names the right verb.
async fn end_one(app: &App, id: &str, running: bool) -> Result<Response, Refusal> {
    let (verb, _) = verbs(running);
    if app.table.find(id).is_some() || app.fleet.is_none() {
        end_here(app, id, running)?;
        return Ok(Json(json!({verb: 1, "id": id})).into_response());
    }
    let fleet = app
        .fleet
        .as_ref()
        .map(|f| f.ask(verb_op(running), Some(id), None, None, 1));
    let answers = match fleet {
        Some(ask) => ask.await,
        None => Vec::new(),
    };
    for a in answers {
        if let Some(why) = a["conflict"].as_str() {
            return Err(ApiError::new(ErrorCode::Conflict, why.to_owned()).into());
        }
        if a["n"] == 1 {
            return Ok(Json(json!({verb: 1, "id": id, "replica": a["replica"]})).into_response());
        }
    }
    Err(find(app, id)
        .err()
        .unwrap_or_else(|| ApiError::new(ErrorCode::NotFound, id.to_owned()))
        .into())
}

fn verb_op(running: bool) -> &'static str {
    if running {
        "stop"
    } else {
        "cancel"
    }
}

/// [`end_one`] for a request this replica holds.
fn end_here(app: &App, id: &str, running: bool) -> Result<(), ApiError> {
    let e = find(app, id)?;
    let (_, other) = verbs(running);
    if e.is_running() != running {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("request `{id}` is {other} it instead"),
        ));
    }
    e.operator_cancel();
    Ok(())
}

/// Carries out an action another replica of the fleet published; the answer, when the asker
/// waits for one.
pub fn act_here(app: &App, a: &Action) -> Option<Value> {
    let replica = app.fleet.as_ref().map(|f| f.replica().to_owned());
    match a.op.as_str() {
        op @ ("cancel" | "stop") => {
            let id = a.id.as_deref()?;
            app.table.find(id)?;
            Some(match end_here(app, id, op == "stop") {
                Ok(()) => json!({"n": 1, "replica": replica}),
                Err(e) => json!({"conflict": e.message}),
            })
        }
        "stop-all" => Some(json!({"n": stop_here(app, a.lane.as_deref()), "replica": replica})),
        "clear-queue" => Some(json!({"n": clear_here(app, a.lane.as_deref()), "replica": replica})),
        _ => {
            crate::control::act_here(app, a);
            None
        }
    }
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
    let n =
        stop_here(&app, f.lane.as_deref()) + elsewhere(&app, "stop-all", f.lane.as_deref()).await;
    Ok(Json(json!({"stopped": n})).into_response())
}

/// What the other replicas of the fleet did of a bulk action, summed.
async fn elsewhere(app: &App, op: &str, lane: Option<&str>) -> u64 {
    let Some(f) = &app.fleet else { return 0 };
    f.ask(op, None, lane, None, f.peers())
        .await
        .iter()
        .filter_map(|a| a["n"].as_u64())
        .sum()
}

/// Stops this replica's running requests (on `lane`).
fn stop_here(app: &App, lane: Option<&str>) -> u64 {
    let mut n = 0;
    for e in app.table.all() {
        if e.is_running()
            && lane.is_none_or(|l| e.lane().is_some_and(|x| x.as_str() == l))
            && !e.cancel.is_cancelled()
        {
            e.operator_cancel();
            n += 1;
        }
    }
    n
}

async fn clear_queue(
    State(app): State<Arc<App>>,
    Query(f): Query<LaneFilter>,
    req: Request,
) -> Result<Response, Refusal> {
    auth::admin(&app, req.headers())?;
    let n = clear_here(&app, f.lane.as_deref())
        + elsewhere(&app, "clear-queue", f.lane.as_deref()).await;
    Ok(Json(json!({"cancelled": n})).into_response())
}

/// Cancels this replica's queued requests (waiting for `lane`).
fn clear_here(app: &App, lane: Option<&str>) -> u64 {
    let pos = positions(app);
    let mut n = 0;
    for e in app.table.all() {
        let in_lane = match (lane, pos.get(&e.tag)) {
            (None, _) => true,
            (Some(l), Some(s)) => s.lanes.iter().any(|p| p == l),
            (Some(_), None) => false,
        };
        if !e.is_running() && in_lane && !e.cancel.is_cancelled() {
            e.operator_cancel();
            n += 1;
        }
    }
    n
}

async fn lanes(State(app): State<Arc<App>>, req: Request) -> Result<Response, Refusal> {
    auth::admin(&app, req.headers())?;
    Ok(Json(fleet_lane_views(&app)).into_response())
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
