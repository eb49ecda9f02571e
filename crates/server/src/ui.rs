//! The live queue panel: one HTML page compiled into the binary, fed by a server-sent event
//! stream (`/admin/events`) that sends a snapshot of every lane and request every 400 ms.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::respond::Refusal;
use crate::views::{fleet_lane_views, fleet_views};
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

/// One snapshot of every lane and request, as an event.
fn snapshot(app: &App) -> Event {
    let body = json!({"lanes": fleet_lane_views(app), "requests": fleet_views(app)});
    Event::default().data(body.to_string())
}

/// `/admin/events`: a snapshot at once, then one every [`TICK`] for as long as the panel stays
/// and the key it opened with is still the admin key. A reload that changes or removes
/// `admin_key` ends the stream at the next tick: a revoked key sees nothing more.
pub async fn events(State(app): State<Arc<App>>, req: Request) -> Result<Response, Refusal> {
    crate::auth::admin(&app, req.headers())?;
    let opened_with: Arc<str> = Arc::from(crate::auth::bearer(req.headers()).unwrap_or_default());
    let stream = futures_util::stream::unfold((app, true), move |(app, first)| {
        let opened_with = opened_with.clone();
        async move {
            if !first {
                tokio::time::sleep(TICK).await;
                if !crate::auth::is_admin_key(&app, &opened_with) {
                    return None;
                }
            }
            let event = snapshot(&app);
            Some((Ok::<_, Infallible>(event), (app, false)))
        }
    });
    let mut r = Sse::new(stream).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}
