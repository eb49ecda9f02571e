//! The pooled HTTP client shared by every lane.
//!
//! Bodies go out as one `Bytes` (no copy) and come back as hyper's `Incoming`, handed to the
//! gateway unread, so streamed responses are relayed chunk by chunk. Dropping the response (or
//! the future) closes the upstream connection, which is how a client disconnect, an operator
//! stop or a deadline reaches the provider.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::UpstreamError;

/// A request with Laneway's user agent and the lane's key.
fn build(
    builder: http::request::Builder,
    api_key: Option<&str>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, UpstreamError> {
    let mut builder = builder.header(USER_AGENT, HeaderValue::from_static(UA));
    if let Some(key) = api_key {
        let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            UpstreamError::BadUrl(
                "the lane's api_key has characters not allowed in a header".into(),
            )
        })?;
        v.set_sensitive(true);
        builder = builder.header(AUTHORIZATION, v);
    }
    builder
        .body(Full::new(body))
        .map_err(|e| UpstreamError::BadUrl(e.to_string()))
}

#[derive(Clone)]
pub struct UpstreamClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        Self {
            inner,
            connect_timeout,
        }
    }

    pub async fn send(
        &self,
        req: UpstreamRequest<'_>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let request = build(
            Request::post(req.url)
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .header("x-request-id", req.request_id),
            req.api_key,
            req.body,
        )?;
        match tokio::time::timeout(req.first_byte_timeout, self.inner.request(request)).await {
            Err(_) => Err(UpstreamError::FirstByteTimeout(req.first_byte_timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.describe(e)),
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
        let request = build(Request::get(url.as_str()), api_key, Bytes::new())?;
        let fetch = async {
            let resp = self
                .inner
                .request(request)
                .await
                .map_err(|e| self.describe(e))?;
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

    fn describe(&self, e: hyper_util::client::legacy::Error) -> UpstreamError {
        let mut msg = e.to_string();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        if e.is_connect() {
            if msg.contains("timed out") || msg.contains("timeout") {
                UpstreamError::ConnectTimeout(self.connect_timeout)
            } else {
                UpstreamError::Connect(msg)
            }
        } else {
            UpstreamError::Dropped(msg)
        }
    }
}
