//! The live queue panel: one HTML page compiled into the binary, fed by a server-sent event
//! stream of lane and request snapshots (`/admin/events`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::admin::{lane_views, views};
use crate::respond::GatewayError;
use crate::App;

const PAGE: &str = include_str!("../assets/panel.html");
const SCRIPT: &str = include_str!("../assets/panel.js");
const STYLE: &str = include_str!("../assets/panel.css");

/// The panel loads only its own script and style and talks only to this gateway; no page may
/// frame it (the panel's buttons stop requests).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How often the panel is sent a fresh snapshot.
const TICK: Duration = Duration::from_millis(400);

pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn snapshot(app: &App) -> Bytes {
    let body = json!({"lanes": lane_views(app), "requests": views(app)});
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(body.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

pub async fn events(State(app): State<Arc<App>>, req: Request) -> Result<Response, GatewayError> {
    crate::auth::admin(&app, req.headers())?;
    let stream = futures_util::stream::unfold((app, true), |(app, first)| async move {
        if !first {
            tokio::time::sleep(TICK).await;
        }
        let frame = snapshot(&app);
        Some((Ok::<_, Infallible>(frame), (app, false)))
    });
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}
