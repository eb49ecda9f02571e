//! The admin API (Bearer `server.admin_key`): see and act on what runs and what waits.
//! Off (404) when no admin key is configured, so an unconfigured gateway exposes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use laneway_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::respond::GatewayError;
use crate::table::{Entry, RequestView};
use crate::{auth, App};

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/requests", get(requests))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/requests/{id}/stop", post(stop))
        .route("/stop-all", post(stop_all))
        .route("/clear-queue", post(clear_queue))
        .route("/lanes", get(lanes))
        .route("/reload", post(reload))
        .route("/events", get(crate::ui::events))
}

/// Queue positions by request tag, the smallest over the lanes a request waits on.
fn positions(app: &App) -> HashMap<u64, (usize, Vec<String>)> {
    let topo = app.topo.load();
    let mut pos: HashMap<u64, (usize, Vec<String>)> = HashMap::new();
    for l in &topo.lanes {
        for (i, tag) in l.lane.waiting().into_iter().enumerate() {
            let e = pos.entry(tag).or_insert((usize::MAX, Vec::new()));
            e.0 = e.0.min(i + 1);
            e.1.push(l.lane.name().to_owned());
        }
    }
    pos
}

pub fn views(app: &App) -> Vec<RequestView> {
    let now = Instant::now();
    let pos = positions(app);
    app.table
        .all()
        .into_iter()
        .map(|e| {
            let started = e.running();
            let queued_ms = started
                .as_ref()
                .map_or(now, |(s, _)| *s)
                .duration_since(e.created)
                .as_millis() as u64;
            let (position, pool) = match (&started, pos.get(&e.tag)) {
                (None, Some((p, pool))) => (Some(*p), pool.clone()),
                _ => (None, Vec::new()),
            };
            RequestView {
                id: e.id.to_string(),
                client_request_id: e.client_id.as_deref().map(str::to_owned),
                state: if started.is_some() {
                    "running"
                } else {
                    "queued"
                },
                lane: started.as_ref().map(|(_, l)| l.to_string()),
                key: e.key.to_string(),
                model: e.model.clone(),
                stream: e.stream,
                queued_ms,
                running_ms: started
                    .as_ref()
                    .map(|(s, _)| now.duration_since(*s).as_millis() as u64),
                attempt: e.attempt.load(std::sync::atomic::Ordering::Relaxed),
                position,
                pool,
            }
        })
        .collect()
}

async fn requests(State(app): State<Arc<App>>, req: Request) -> Result<Response, GatewayError> {
    auth::admin(&app, req.headers())?;
    Ok(Json(views(&app)).into_response())
}

fn find(app: &App, id: &str) -> Result<Arc<Entry>, GatewayError> {
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
) -> Result<Response, GatewayError> {
    end_one(&app, &id, &req, false)
}

async fn stop(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, GatewayError> {
    end_one(&app, &id, &req, true)
}

/// Cancels a queued request (`running = false`) or stops a running one; acting on a request in
/// the other state is a 409 that names the right verb.
fn end_one(app: &App, id: &str, req: &Request, running: bool) -> Result<Response, GatewayError> {
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
) -> Result<Response, GatewayError> {
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
) -> Result<Response, GatewayError> {
    auth::admin(&app, req.headers())?;
    let pos = positions(&app);
    let mut n = 0;
    for e in app.table.all() {
        let in_lane = match (&f.lane, pos.get(&e.tag)) {
            (None, _) => true,
            (Some(l), Some((_, pool))) => pool.iter().any(|p| p == l),
            (Some(_), None) => false,
        };
        if !e.is_running() && in_lane && !e.cancel.is_cancelled() {
            e.operator_cancel();
            n += 1;
        }
    }
    Ok(Json(json!({"cancelled": n})).into_response())
}

#[derive(Serialize)]
pub struct LaneView {
    pub name: String,
    pub in_flight: u32,
    pub queued: usize,
    pub limit: Option<u32>,
    pub rpm_used: Option<u64>,
    pub tpm_used: Option<u64>,
    pub state: &'static str,
    pub cooldown_until: Option<String>,
}

pub fn lane_views(app: &App) -> Vec<LaneView> {
    let topo = app.topo.load();
    topo.lanes
        .iter()
        .map(|l| {
            let s = l.lane.snapshot();
            LaneView {
                name: s.name,
                in_flight: s.in_flight,
                queued: s.queued,
                limit: s.limit,
                rpm_used: s.rpm_used,
                tpm_used: s.tpm_used,
                state: match s.health {
                    laneway_admission::Health::Ok => "ok",
                    laneway_admission::Health::CoolingDown => "cooling_down",
                    laneway_admission::Health::Open => "open",
                },
                cooldown_until: s.cooldown_until.map(wall_clock),
            }
        })
        .collect()
}

/// An RFC 3339 time `d` from now. Never fails: `d` is capped so the year stays printable.
fn wall_clock(d: std::time::Duration) -> String {
    let now = std::time::SystemTime::now();
    let at = now
        .checked_add(d.min(laneway_core::duration::CEILING))
        .unwrap_or(now);
    humantime::format_rfc3339_millis(at).to_string()
}

async fn lanes(State(app): State<Arc<App>>, req: Request) -> Result<Response, GatewayError> {
    auth::admin(&app, req.headers())?;
    Ok(Json(lane_views(&app)).into_response())
}

async fn reload(State(app): State<Arc<App>>, req: Request) -> Result<Response, GatewayError> {
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
