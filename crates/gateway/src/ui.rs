//! The live queue panel: one HTML page compiled into the binary, fed by a server-sent event
//! stream of lane and request snapshots (`/admin/events`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::admin::{authorize, lane_views, views};
use crate::respond::GatewayError;
use crate::App;

const PAGE: &str = include_str!("../assets/panel.html");

/// How often the panel is sent a fresh snapshot while anything changes.
const TICK: Duration = Duration::from_millis(400);

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

fn snapshot(app: &App) -> Bytes {
    let body = json!({"lanes": lane_views(app), "requests": views(app)});
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(body.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

pub async fn events(State(app): State<Arc<App>>, req: Request) -> Result<Response, GatewayError> {
    authorize(&app, req.headers())?;
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
