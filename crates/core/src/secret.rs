//! Secrets that cannot leak by accident.
//!
//! API keys pass through config, admin output, logs and metrics. Wrapping them means a stray
//! `{:?}` or a serialised config prints `****` instead of the key; reading the value takes an
//! explicit [`Secret::expose`].

use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value. Call sites are greppable: every one of them is a place a secret leaves.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl<T> serde::Serialize for Secret<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("sk-live-123".to_string());
        assert_eq!(format!("{s:?} {s}"), "**** ****");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"****\"");
        assert_eq!(s.expose(), "sk-live-123");
    }
}

/// `url` as it may be shown (check, admin views, logs, errors): a password in its userinfo
/// (`https://user:PASSWORD@host/v1`) becomes `****`, and so does a userinfo without one (a
/// token passed as the user name). Borrowed when there is nothing to hide.
pub fn redact_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // The last `@` ends the userinfo: a password may itself hold one.
    let Some(at) = authority.rfind('@') else {
        return url.into();
    };
    let host_and_rest = &rest[at + 1..];
    match authority[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:****@{host_and_rest}").into(),
        None => format!("{scheme}://****@{host_and_rest}").into(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn a_url_password_is_never_shown() {
        for (url, shown) in [
            ("http://user:URLPASS@host/v1", "http://user:****@host/v1"),
            (
                "https://a:b@c:pw@h:8443/v1?x=@",
                "https://a:****@h:8443/v1?x=@",
            ),
            ("https://token@host/v1", "https://****@host/v1"),
            ("https://host/v1/a@b", "https://host/v1/a@b"),
            ("https://api.example.com/v1", "https://api.example.com/v1"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
