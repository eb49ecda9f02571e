//! Where upstream requests go, prepared once: a lane's URL and key turn into the origin its
//! connections are made to, the request target, and the `Host` and `Authorization` values.
//! Sending a request then only clones shared bytes instead of parsing and formatting them again.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, HOST, USER_AGENT};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri};
use http_body_util::Full;
use laneway_core::wire::Endpoint;

use crate::error::UpstreamError;
use crate::pool::Origin;

const UA: &str = concat!("laneway/", env!("CARGO_PKG_VERSION"));

/// `x-request-id`, named once so that sending a request does not allocate the name.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How an upstream takes its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// `Authorization: Bearer KEY` (OpenAI and compatible servers).
    #[default]
    Bearer,
    /// `x-api-key: KEY`, with `anthropic-version` unless the client sends one (Anthropic).
    Anthropic,
}

/// The `anthropic-version` sent when the client names none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A full upstream URL and the key sent with it, checked and split for sending.
#[derive(Clone)]
pub struct Target {
    url: String,
    pub(crate) origin: Origin,
    path: PathAndQuery,
    host: HeaderValue,
    auth: Option<(HeaderName, HeaderValue)>,
    anthropic: bool,
    /// How long a new connection may take; `None`: the client's own.
    pub(crate) connect_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for Target {
    // The key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &laneway_core::redact_url(&self.url))
            .finish()
    }
}

impl Target {
    /// Checks `url` (http:// or https://, with a host) and `api_key` (a valid header value).
    /// Credentials in the URL (`https://user:pass@host/v1`) never go into `Host`: they are
    /// sent as `Authorization: Basic` when the lane has no `api_key`, and never shown.
    pub fn new(url: &str, api_key: Option<&str>) -> Result<Self, UpstreamError> {
        Self::with_auth(url, api_key, Auth::Bearer)
    }

    /// [`Target::new`] for an upstream that takes its key the way `auth` says.
    pub fn with_auth(url: &str, api_key: Option<&str>, auth: Auth) -> Result<Self, UpstreamError> {
        let scheme = auth;
        let shown = laneway_core::redact_url(url);
        let bad = |why: &str| UpstreamError::BadUrl(format!("{shown}: {why}"));
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let parts = uri.into_parts();
        let https = match parts.scheme.as_ref().map(|s| s.as_str()) {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("only http:// and https:// are supported")),
        };
        let full = parts.authority.ok_or_else(|| bad("no host"))?;
        let (userinfo, authority) = match full.as_str().rsplit_once('@') {
            Some((info, host)) => (
                Some(info),
                host.parse::<http::uri::Authority>()
                    .map_err(|_| bad("bad host"))?,
            ),
            None => (None, full.clone()),
        };
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad("bad host"))?;
        let path = parts
            .path_and_query
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let auth = match api_key {
            Some(key) => {
                let (name, value) = match scheme {
                    Auth::Bearer => (AUTHORIZATION, format!("Bearer {key}")),
                    Auth::Anthropic => (HeaderName::from_static("x-api-key"), key.to_owned()),
                };
                let mut v = HeaderValue::from_str(&value).map_err(|_| {
                    UpstreamError::BadUrl(
                        "the lane's api_key has characters not allowed in a header".into(),
                    )
                })?;
                v.set_sensitive(true);
                Some((name, v))
            }
            None => match userinfo {
                Some(info) => {
                    let mut v =
                        HeaderValue::from_str(&format!("Basic {}", base64(info.as_bytes())))
                            .map_err(|_| bad("bad credentials"))?;
                    v.set_sensitive(true);
                    Some((AUTHORIZATION, v))
                }
                None => None,
            },
        };
        Ok(Self {
            url: url.to_owned(),
            origin: Origin { https, authority },
            path,
            host,
            auth,
            anthropic: scheme == Auth::Anthropic,
            connect_timeout: None,
        })
    }

    /// The URL this target was made from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A request to this target with Laneway's user agent, the key and `extra` headers (room is
    /// made for them up front).
    pub(crate) fn request(
        &self,
        method: Method,
        body: Bytes,
        extra: usize,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = Uri::from(self.path.clone());
        let mut headers = HeaderMap::with_capacity(4 + extra);
        headers.insert(HOST, self.host.clone());
        headers.insert(USER_AGENT, HeaderValue::from_static(UA));
        if let Some((name, value)) = &self.auth {
            headers.insert(name.clone(), value.clone());
        }
        if self.anthropic {
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        *request.headers_mut() = headers;
        request
    }
}

/// Standard base64 with padding, for `Authorization: Basic` from a URL's userinfo.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A base URL's targets for each endpoint, with one key.
#[derive(Clone, Debug)]
pub struct Endpoints(Vec<Target>);

impl Endpoints {
    /// Targets for `base` (like `https://api.example.com/v1`) plus each endpoint's path.
    pub fn new(base: &str, api_key: Option<&str>) -> Result<Self, UpstreamError> {
        Self::with_auth(base, api_key, Auth::Bearer)
    }

    /// [`Endpoints::new`] for an upstream that takes its key the way `auth` says.
    pub fn with_auth(base: &str, api_key: Option<&str>, auth: Auth) -> Result<Self, UpstreamError> {
        // The base alone first, so that a bad one is named as it was given.
        Target::with_auth(base, api_key, auth)?;
        let all = Endpoint::ALL
            .iter()
            .map(|e| Target::with_auth(&format!("{base}{}", e.upstream_suffix()), api_key, auth))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(all))
    }

    /// The same targets, each connecting within `timeout` (a lane's `connect_timeout`).
    pub fn with_connect_timeout(mut self, timeout: std::time::Duration) -> Self {
        for t in &mut self.0 {
            t.connect_timeout = Some(timeout);
        }
        self
    }

    /// The base URL's target for a path of its own (`/responses/{id}`), with the same key.
    pub fn at(&self, path: &str) -> Result<Target, UpstreamError> {
        let first = &self.0[0];
        let base = first
            .url
            .strip_suffix(Endpoint::ALL[0].upstream_suffix())
            .unwrap_or(&first.url);
        let mut t = Target::with_auth(&format!("{base}{path}"), None, Auth::Bearer)?;
        t.auth.clone_from(&first.auth);
        t.anthropic = first.anthropic;
        t.connect_timeout = first.connect_timeout;
        Ok(t)
    }

    pub fn get(&self, e: Endpoint) -> &Target {
        // One target per endpoint, in `Endpoint::ALL` order, made in `with_auth`.
        &self.0[e as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_split_once_and_sent_as_origin_form() {
        let t = Target::new(
            "https://api.example.com:8443/v1/chat/completions",
            Some("sk-1"),
        )
        .unwrap();
        assert!(t.origin.https);
        assert_eq!(t.origin.authority.as_str(), "api.example.com:8443");
        let r = t.request(Method::POST, Bytes::from_static(b"{}"), 0);
        assert_eq!(r.uri().to_string(), "/v1/chat/completions");
        assert_eq!(r.headers()[HOST], "api.example.com:8443");
        assert_eq!(r.headers()[AUTHORIZATION], "Bearer sk-1");
        assert!(r.headers()[AUTHORIZATION].is_sensitive());
        assert!(!format!("{t:?}").contains("sk-1"));
        let bare = Target::new("http://127.0.0.1:9", None).unwrap();
        let r = bare.request(Method::GET, Bytes::new(), 0);
        assert_eq!(r.uri().to_string(), "/");
        assert!(r.headers().get(AUTHORIZATION).is_none());
        let all = Endpoints::new("http://127.0.0.1:9/v1", None).unwrap();
        for e in Endpoint::ALL {
            assert_eq!(
                all.get(e).url(),
                format!("http://127.0.0.1:9/v1{}", e.upstream_suffix())
            );
        }
    }

    #[test]
    fn credentials_in_a_url_go_as_basic_auth_and_are_never_shown() {
        let t = Target::new("http://user:URLPASS@127.0.0.1:9/v1", None).unwrap();
        let r = t.request(Method::POST, Bytes::new(), 0);
        assert_eq!(r.headers()[HOST], "127.0.0.1:9");
        assert_eq!(t.origin.authority.as_str(), "127.0.0.1:9");
        // base64("user:URLPASS")
        assert_eq!(r.headers()[AUTHORIZATION], "Basic dXNlcjpVUkxQQVNT");
        assert!(!format!("{t:?}").contains("URLPASS"));
        // A lane's api_key wins over the URL's credentials.
        let k = Target::new("http://user:URLPASS@127.0.0.1:9/v1", Some("sk-1")).unwrap();
        let r = k.request(Method::POST, Bytes::new(), 0);
        assert_eq!(r.headers()[AUTHORIZATION], "Bearer sk-1");
        let e = Target::new("ftp://user:URLPASS@h/v1", None).unwrap_err();
        assert!(!e.to_string().contains("URLPASS"), "{e}");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn bad_urls_and_keys_are_refused_with_the_reason() {
        for (url, key, why) in [
            ("ftp://example.com/v1", None, "only http:// and https://"),
            ("not a url", None, "not a URL"),
            ("/v1/chat", None, "only http:// and https://"),
            ("http://example.com/v1", Some("sk\n1"), "api_key"),
        ] {
            let e = Target::new(url, key).unwrap_err();
            assert!(!e.retryable(), "{url}");
            assert!(e.to_string().contains(why), "{url}: {e}");
        }
    }
}
