//! Lane controls at run time (`/admin/lanes/{name}`): pause, resume and drain a lane, and set
//! its concurrency by hand (a number, one at a time, back to the config, or adaptive). Every
//! change is logged (target `laneway::admin`, with who made it) and counted.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use laneway_admission::{Control, Lane};
use laneway_core::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::Value;

use crate::metrics::LaneAction;
use crate::respond::Refusal;
use crate::views::{lane_view, LaneView};
use crate::{auth, App};

/// The highest concurrency an operator may set: far above any upstream's real capacity, low
/// enough that a typo cannot turn a limit off.
pub const MAX_CONCURRENCY: u64 = 10_000;
/// The longest a drain request waits for the lane to empty.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(600);
/// Who acts: the admin API has one key, so its holder is named by its role.
const WHO: &str = "admin";

fn lane(app: &App, name: &str) -> Result<Arc<Lane>, Refusal> {
    let topo = app.topo.load();
    match topo.lane(name) {
        Some(l) => Ok(l.lane.clone()),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no lane is named `{name}`; GET /admin/lanes lists them"),
        )
        .into()),
    }
}

/// Logs and counts an operator's action on a lane.
fn record(app: &App, name: &str, action: &'static str, detail: &str) {
    tracing::info!(target: "laneway::admin", lane = %name, action, detail, by = WHO, "lane control");
    app.metrics
        .lane_controls
        .get_or_create(&LaneAction {
            lane: Arc::new(name.to_owned()),
            action: action.into(),
        })
        .inc();
}

/// `GET /admin/lanes/{name}`
pub async fn get_lane(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    auth::admin(&app, &headers)?;
    let l = lane(&app, &name)?;
    Ok(Json(lane_view(&l)).into_response())
}

/// The lane after a control, and whether the control changed anything.
#[derive(serde::Serialize)]
struct Changed {
    changed: bool,
    #[serde(flatten)]
    lane: LaneView,
}

/// Pauses or resumes a lane; doing it twice answers `changed: false`, not an error.
fn set_paused(app: &App, name: &str, paused: bool) -> Result<Response, Refusal> {
    let l = lane(app, name)?;
    let changed = l.set_paused(paused);
    if changed {
        record(app, name, if paused { "pause" } else { "resume" }, "");
    }
    Ok(Json(Changed {
        changed,
        lane: lane_view(&l),
    })
    .into_response())
}

/// `POST /admin/lanes/{name}/pause`
pub async fn pause(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    auth::admin(&app, &headers)?;
    let r = set_paused(&app, &name, true)?;
    tell_fleet(&app, "pause", &name, None).await;
    Ok(r)
}

/// `POST /admin/lanes/{name}/resume`
pub async fn resume(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    auth::admin(&app, &headers)?;
    let r = set_paused(&app, &name, false)?;
    tell_fleet(&app, "resume", &name, None).await;
    Ok(r)
}

/// Does to the lane of every other replica what was just done here.
async fn tell_fleet(app: &App, op: &str, lane: &str, body: Option<String>) {
    if let Some(f) = &app.fleet {
        f.ask(op, None, Some(lane), body, 0).await;
    }
}

/// An action on a lane published by another replica of the fleet, done here.
pub(crate) fn act_here(app: &App, a: &crate::fleet::Action) {
    let Some(name) = a.lane.as_deref() else {
        return;
    };
    let Ok(l) = lane(app, name) else { return };
    match a.op.as_str() {
        op @ ("pause" | "drain" | "resume") if l.set_paused(op != "resume") => {
            let action = if op == "resume" { "resume" } else { "pause" };
            record(app, name, action, "fleet");
        }
        "patch" => {
            let body = a.body.as_deref().unwrap_or_default().as_bytes();
            if let Ok(control) = parse_control(body) {
                l.set_control(control);
                record(app, name, "concurrency", &format!("{control:?} (fleet)"));
            }
        }
        _ => {}
    }
}

#[derive(Deserialize)]
pub struct DrainQuery {
    /// How long to wait for the running requests to finish, like `30s` (default 30 s).
    timeout: Option<String>,
}

/// `POST /admin/lanes/{name}/drain[?timeout=30s]`: pauses the lane and answers once nothing
/// runs on it (`drained: true`) or when the timeout passes (`drained: false`).
pub async fn drain(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<DrainQuery>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    auth::admin(&app, &headers)?;
    let wait = match q.timeout.as_deref() {
        None => Duration::from_secs(30),
        Some(t) => laneway_core::duration::parse(t)
            .filter(|d| *d <= MAX_DRAIN_WAIT)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("timeout `{t}` is not a duration of at most 10m, like \"30s\""),
                )
                .with_param("timeout")
            })?,
    };
    let l = lane(&app, &name)?;
    if l.set_paused(true) {
        record(&app, &name, "drain", "");
    }
    tell_fleet(&app, "drain", &name, None).await;
    let deadline = tokio::time::Instant::now() + wait;
    // Admin-only and rare: a short poll is simpler than a notification on every release.
    while l.snapshot().in_flight > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = lane_view(&l);
    let drained = view.in_flight == 0;
    let mut v = serde_json::to_value(view).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("drained".into(), Value::Bool(drained));
    }
    Ok(Json(v).into_response())
}

/// What `PATCH /admin/lanes/{name}` accepts: `{"concurrency": N | "serial" | "parallel" | "auto"}`.
fn parse_control(body: &[u8]) -> Result<Control, ApiError> {
    let bad = |msg: String| ApiError::new(ErrorCode::InvalidRequest, msg).with_param("concurrency");
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the body is not JSON ({e}); send {{\"concurrency\": 4}}, \"serial\", \"parallel\" or \"auto\""
        ))
    })?;
    let Some(c) = v.get("concurrency") else {
        return Err(bad("the body needs a `concurrency` field".into()));
    };
    match c {
        Value::String(s) if s == "serial" => Ok(Control::Serial),
        Value::String(s) if s == "parallel" => Ok(Control::Config),
        Value::String(s) if s == "auto" => Ok(Control::Auto),
        Value::Number(n) => match n.as_u64() {
            Some(n @ 1..=MAX_CONCURRENCY) => Ok(Control::Fixed(n as u32)),
            _ => Err(bad(format!(
                "concurrency {n} is out of range; use 1 to {MAX_CONCURRENCY}"
            ))),
        },
        other => Err(bad(format!(
            "concurrency {other} is not a number, \"serial\", \"parallel\" or \"auto\""
        ))),
    }
}

/// `PATCH /admin/lanes/{name}`
pub async fn patch(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    auth::admin(&app, &headers)?;
    let l = lane(&app, &name)?;
    let control = parse_control(&body)?;
    let changed = l.snapshot().control != control;
    l.set_control(control);
    if changed {
        record(&app, &name, "concurrency", &format!("{control:?}"));
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    tell_fleet(&app, "patch", &name, Some(body)).await;
    Ok(Json(Changed {
        changed,
        lane: lane_view(&l),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_values_and_their_bounds() {
        let p = |s: &str| parse_control(s.as_bytes());
        assert_eq!(p(r#"{"concurrency": 3}"#).unwrap(), Control::Fixed(3));
        assert_eq!(p(r#"{"concurrency": "serial"}"#).unwrap(), Control::Serial);
        assert_eq!(
            p(r#"{"concurrency": "parallel"}"#).unwrap(),
            Control::Config
        );
        assert_eq!(p(r#"{"concurrency": "auto"}"#).unwrap(), Control::Auto);
        for bad in [
            r#"{"concurrency": 0}"#,
            r#"{"concurrency": 10001}"#,
            r#"{"concurrency": -1}"#,
            r#"{"concurrency": 1.5}"#,
            r#"{"concurrency": "fast"}"#,
            r#"{"limit": 3}"#,
            "not json",
        ] {
            let e = p(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
            assert_eq!(e.param, Some("concurrency"), "{bad}");
        }
    }
}
