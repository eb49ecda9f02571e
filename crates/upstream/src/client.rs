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
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::error::UpstreamError;
use crate::pool::{Failure, Origin, Pool, UpstreamBody};

/// Idle connections kept per origin, and how long one may idle.
const MAX_IDLE: usize = 1024;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Splits a full URL into the origin a connection goes to and the request's own target, and
/// builds the request with Laneway's user agent, the lane's key and the origin as `Host`.
fn build(
    method: http::Method,
    url: &str,
    api_key: Option<&str>,
    body: Bytes,
) -> Result<(Origin, Request<Full<Bytes>>), UpstreamError> {
    let bad = |why: &str| UpstreamError::BadUrl(format!("{url}: {why}"));
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let parts = uri.into_parts();
    let https = match parts.scheme.as_ref().map(|s| s.as_str()) {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("only http:// and https:// are supported")),
    };
    let authority = parts.authority.ok_or_else(|| bad("no host"))?;
    let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad("bad host"))?;
    let mut target = Uri::default().into_parts();
    target.path_and_query = Some(
        parts
            .path_and_query
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    let target = Uri::from_parts(target).map_err(|e| bad(&e.to_string()))?;
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header(HOST, host)
        .header(USER_AGENT, HeaderValue::from_static(UA));
    if let Some(key) = api_key {
        let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            UpstreamError::BadUrl(
                "the lane's api_key has characters not allowed in a header".into(),
            )
        })?;
        v.set_sensitive(true);
        builder = builder.header(AUTHORIZATION, v);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| UpstreamError::BadUrl(e.to_string()))?;
    Ok((Origin { https, authority }, request))
}

#[derive(Clone)]
pub struct UpstreamClient {
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<Pool>,
    connect_timeout: Duration,
}

/// One attempt's request.
pub struct UpstreamRequest<'a> {
    /// Full URL: the lane's base URL plus the endpoint suffix.
    pub url: &'a str,
    pub api_key: Option<&'a str>,
    pub body: Bytes,
    pub request_id: &'a str,
    pub first_byte_timeout: Duration,
}

const UA: &str = concat!("laneway/", env!("CARGO_PKG_VERSION"));

impl UpstreamClient {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
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
        origin: &Origin,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // Boxed: this future is a few KiB (connecting, the TLS handshake, the exchange), and a
        // request waiting in a lane's queue would otherwise carry that space the whole time.
        Box::pin(
            self.pool
                .send(&self.connector, self.connect_timeout, origin, request),
        )
        .await
        .map_err(|f| self.describe(f))
    }

    pub async fn send(
        &self,
        req: UpstreamRequest<'_>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (origin, mut request) = build(http::Method::POST, req.url, req.api_key, req.body)?;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(id) = HeaderValue::from_str(req.request_id) {
            headers.insert("x-request-id", id);
        }
        match tokio::time::timeout(req.first_byte_timeout, self.request(&origin, request)).await {
            Err(_) => Err(UpstreamError::FirstByteTimeout(req.first_byte_timeout)),
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
        let (origin, request) = build(http::Method::GET, &url, api_key, Bytes::new())?;
        let fetch = async {
            let resp = self.request(&origin, request).await?;
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

    fn describe(&self, failure: Failure) -> UpstreamError {
        match failure {
            Failure::ConnectTimeout => UpstreamError::ConnectTimeout(self.connect_timeout),
            Failure::ConnectError(e) => {
                let msg = chain(&*e);
                if msg.contains("timed out") || msg.contains("timeout") {
                    UpstreamError::ConnectTimeout(self.connect_timeout)
                } else {
                    UpstreamError::Connect(msg)
                }
            }
            Failure::Http(e) => UpstreamError::Dropped(chain(&e)),
        }
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
