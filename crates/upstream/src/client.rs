//! The HTTP client shared by every lane.
//!
//! Bodies go out as one `Bytes` (no copy) and come back as an [`UpstreamBody`], handed to the
//! gateway unread, so streamed responses are relayed chunk by chunk. Connections are pooled per
//! origin and driven by the requests that use them (see [`crate::pool`]). Dropping the response
//! (or the future) closes the upstream connection, which is how a client disconnect, an
//! operator stop or a deadline reaches the provider.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::error::UpstreamError;
use crate::pool::{Failure, Pool, UpstreamBody};
use crate::target::{Target, X_REQUEST_ID};

/// Idle connections kept per origin, and how long one may idle.
const MAX_IDLE: usize = 1024;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone)]
pub struct UpstreamClient {
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<Pool>,
    connect_timeout: Duration,
}

/// One attempt's request.
pub struct UpstreamRequest<'a> {
    /// The lane's URL for the endpoint, with its key.
    pub target: &'a Target,
    pub body: Bytes,
    /// Client headers the upstream must see (an API version or beta), set before the
    /// target's own.
    pub pass: Option<&'a http::HeaderMap>,
    pub request_id: &'a str,
    pub first_byte_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        // Each request's target says how long connecting may take (the pool bounds it).
        http.set_connect_timeout(None);
        http.set_keepalive(Some(Duration::from_secs(60)));
        // Hosted providers need TLS; the bundled Mozilla roots make the binary independent of
        // the machine's certificate store. Plain http:// stays available for local servers.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pool = Pool::new(MAX_IDLE, IDLE_TIMEOUT);
        // Connections nobody polls do not see their upstream close them; a sweep now and then
        // closes those that idled too long, so a quiet gateway does not hoard sockets.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(IDLE_TIMEOUT / 3);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(pool) => pool.sweep(),
                        None => return,
                    }
                }
            });
        }
        Self {
            connector: https,
            pool,
            connect_timeout,
        }
    }

    async fn request(
        &self,
        target: &Target,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let connect_timeout = target.connect_timeout.unwrap_or(self.connect_timeout);
        // Not boxed: the pool boxes the large part (connecting) itself, on the rare path that
        // needs it.
        self.pool
            .send(&self.connector, connect_timeout, &target.origin, request)
            .await
            .map_err(|f| describe(f, connect_timeout))
    }

    pub async fn send(
        &self,
        req: UpstreamRequest<'_>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let extra = 2 + req.pass.map_or(0, http::HeaderMap::len);
        let mut request = req.target.request(http::Method::POST, req.body, extra);
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // A form's own content type (its boundary) replaces the JSON one.
        if let Some(pass) = req.pass {
            for (name, value) in pass {
                headers.insert(name.clone(), value.clone());
            }
        }
        if let Ok(id) = HeaderValue::from_str(req.request_id) {
            headers.insert(X_REQUEST_ID.clone(), id);
        }
        match tokio::time::timeout(req.first_byte_timeout, self.request(req.target, request)).await
        {
            Err(_) => Err(UpstreamError::FirstByteTimeout(req.first_byte_timeout)),
            Ok(r) => r,
        }
    }

    /// A request without a body (`GET`, `DELETE`, a bodiless `POST`) to `target`, such as the
    /// Responses API's calls on an id.
    pub async fn send_as(
        &self,
        method: http::Method,
        target: &Target,
        request_id: &str,
        first_byte_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut request = target.request(method, Bytes::new(), 1);
        if let Ok(id) = HeaderValue::from_str(request_id) {
            request.headers_mut().insert(X_REQUEST_ID.clone(), id);
        }
        match tokio::time::timeout(first_byte_timeout, self.request(target, request)).await {
            Err(_) => Err(UpstreamError::FirstByteTimeout(first_byte_timeout)),
            Ok(r) => r,
        }
    }

    /// `GET {base}/models`: the ids an upstream serves, within `timeout` and
    /// [`crate::models::MAX_LIST_BYTES`].
    pub async fn list_models(
        &self,
        base_url: &str,
        api_key: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<String>, UpstreamError> {
        let url = format!("{base_url}/models");
        let target = Target::new(&url, api_key)?;
        let request = target.request(http::Method::GET, Bytes::new(), 0);
        let fetch = async {
            let resp = self.request(&target, request).await?;
            if !resp.status().is_success() {
                return Err(UpstreamError::Dropped(format!(
                    "{url} answered {}",
                    resp.status()
                )));
            }
            let body =
                http_body_util::Limited::new(resp.into_body(), crate::models::MAX_LIST_BYTES)
                    .collect()
                    .await
                    .map_err(|e| UpstreamError::Dropped(format!("reading {url}: {e}")))?
                    .to_bytes();
            Ok(crate::models::parse_list(&body))
        };
        tokio::time::timeout(timeout, fetch)
            .await
            .unwrap_or(Err(UpstreamError::FirstByteTimeout(timeout)))
    }
}

/// What a pool failure means, with the connect timeout that was in force.
fn describe(failure: Failure, connect_timeout: Duration) -> UpstreamError {
    match failure {
        Failure::ConnectTimeout => UpstreamError::ConnectTimeout(connect_timeout),
        Failure::ConnectError(e) => {
            let msg = chain(&*e);
            if msg.contains("timed out") || msg.contains("timeout") {
                UpstreamError::ConnectTimeout(connect_timeout)
            } else {
                UpstreamError::Connect(msg)
            }
        }
        Failure::Http(e) => UpstreamError::Dropped(chain(&e)),
    }
}

/// An error and its sources, one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
