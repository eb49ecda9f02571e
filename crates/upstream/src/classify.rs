//! What an upstream's answer means for Laneway.
//!
//! The commit point: once the first byte of a response has gone to the client nothing is
//! retried. Classification therefore only looks at the status and headers, before any byte is
//! forwarded; the body of an error is read only when the status is already known to be an error.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use laneway_core::duration;

/// Pacing hints an upstream sent, parsed from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hints {
    /// `retry-after-ms`, else `Retry-After` (seconds or an HTTP date).
    pub retry_after: Option<Duration>,
    pub limit_requests: Option<u64>,
    pub limit_tokens: Option<u64>,
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_requests: Option<Duration>,
    pub reset_tokens: Option<Duration>,
}

impl Hints {
    pub fn from_headers(h: &HeaderMap) -> Self {
        // One pass over the names an answer has (a handful), instead of a hashed lookup for each
        // of the eight names below, which most answers do not carry.
        let mut hints = Self::default();
        let mut retry_after_ms = None;
        for name in h.keys() {
            let key = name.as_str();
            if !key.starts_with("x-ratelimit-")
                && !key.starts_with("retry-after")
                && !key.starts_with("anthropic-ratelimit-")
            {
                continue;
            }
            let Some(v) = h.get(name).and_then(|v| v.to_str().ok()).map(str::trim) else {
                continue;
            };
            match key {
                "retry-after-ms" => {
                    retry_after_ms = v
                        .parse::<f64>()
                        .ok()
                        .and_then(|ms| duration::from_secs_f64(ms / 1000.0));
                }
                "retry-after" => hints.retry_after = parse_retry_after(v),
                "x-ratelimit-limit-requests" => hints.limit_requests = v.parse().ok(),
                "x-ratelimit-limit-tokens" => hints.limit_tokens = v.parse().ok(),
                "x-ratelimit-remaining-requests" => hints.remaining_requests = v.parse().ok(),
                "x-ratelimit-remaining-tokens" => hints.remaining_tokens = v.parse().ok(),
                "x-ratelimit-reset-requests" => hints.reset_requests = parse_reset(v),
                "x-ratelimit-reset-tokens" => hints.reset_tokens = parse_reset(v),
                // Anthropic's: the same counts, resets as RFC 3339 times.
                "anthropic-ratelimit-requests-limit" => hints.limit_requests = v.parse().ok(),
                "anthropic-ratelimit-tokens-limit" => hints.limit_tokens = v.parse().ok(),
                "anthropic-ratelimit-requests-remaining" => {
                    hints.remaining_requests = v.parse().ok();
                }
                "anthropic-ratelimit-tokens-remaining" => hints.remaining_tokens = v.parse().ok(),
                "anthropic-ratelimit-requests-reset" => hints.reset_requests = until_rfc3339(v),
                "anthropic-ratelimit-tokens-reset" => hints.reset_tokens = until_rfc3339(v),
                _ => {}
            }
        }
        // `retry-after-ms` is the more precise of the two when it parses.
        hints.retry_after = retry_after_ms.or(hints.retry_after);
        hints
    }

    /// When the upstream's budget is spent, how long until it can take the next request.
    ///
    /// Providers' `reset` is the time until the budget is *full* again; their buckets refill
    /// continuously, so the next request fits after one refill step: `reset / limit` (for tokens,
    /// the refill of a typical request of [`TYPICAL_REQUEST_TOKENS`]). `None` when budget is left
    /// or no header said.
    pub fn exhausted_for(&self) -> Option<Duration> {
        let step =
            |remaining: Option<u64>, reset: Option<Duration>, limit: Option<u64>, units: u64| {
                if remaining != Some(0) {
                    return None;
                }
                let reset = reset?;
                Some(match limit {
                    Some(l) if l > 0 => (reset.mul_f64(units as f64 / l as f64)).min(reset),
                    _ => reset.min(Duration::from_secs(1)),
                })
            };
        let req = step(
            self.remaining_requests,
            self.reset_requests,
            self.limit_requests,
            1,
        );
        let tok = step(
            self.remaining_tokens,
            self.reset_tokens,
            self.limit_tokens,
            TYPICAL_REQUEST_TOKENS,
        );
        req.max(tok)
    }
}

/// The time from now until an RFC 3339 instant (`2026-12-07T03:50:00Z`, fractions and offsets
/// allowed), zero if it has passed, capped at [`duration::CEILING`]; `None` if it does not parse.
pub fn until_rfc3339(v: &str) -> Option<Duration> {
    let at = parse_rfc3339(v)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    duration::from_secs_f64((at - now).max(0.0))
}

/// Seconds since the Unix epoch of an RFC 3339 time.
fn parse_rfc3339(v: &str) -> Option<f64> {
    let b = v.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = v.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &v[19..];
    let mut frac = 0.0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        frac = format!("0.{}", &f[..digits]).parse().ok()?;
        rest = &f[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + s - offset) as f64 + frac)
}

/// Tokens a request is assumed to need when pacing on an exhausted token budget.
pub const TYPICAL_REQUEST_TOKENS: u64 = 256;

/// `Retry-After`: delay-seconds or an HTTP date, capped at [`duration::CEILING`].
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.parse::<f64>() {
        return duration::from_secs_f64(secs);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let wait = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(wait.min(duration::CEILING))
}

/// OpenAI's reset durations: `1s`, `850ms`, `6m0s`, `1h2m3.5s`, or plain seconds.
pub fn parse_reset(v: &str) -> Option<Duration> {
    duration::parse(v)
}

/// The meaning of one attempt's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Worth another attempt (on this lane after the hint, or on a pool mate).
    Retryable {
        overloaded: bool,
    },
    /// Final: pass it to the client as it is.
    Final,
}

/// Classifies a status. 429 needs the body to tell a rate limit (retry) from an exhausted quota
/// (final): pass `quota_exhausted` from [`is_quota_error`].
pub fn classify(status: StatusCode, quota_exhausted: bool) -> Outcome {
    match status.as_u16() {
        200..=399 => Outcome::Success,
        429 if quota_exhausted => Outcome::Final,
        429 => Outcome::Retryable { overloaded: true },
        408 | 409 => Outcome::Retryable { overloaded: false },
        503 => Outcome::Retryable { overloaded: true },
        500 | 502 | 504 => Outcome::Retryable { overloaded: false },
        _ => Outcome::Final,
    }
}

/// Whether an error body says the account is out of quota (never fixed by waiting).
pub fn is_quota_error(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"insufficient_quota").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_rate_limit_headers_are_read() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2026-12-07T03:50:00Z"), Some(1_796_615_400.0));
        assert_eq!(
            parse_rfc3339("2026-12-07T04:50:00.5+01:00"),
            Some(1_796_615_400.5)
        );
        for bad in [
            "",
            "2026-13-07T03:50:00Z",
            "2026-12-07T03:50:00",
            "yesterday",
            "2026-12-07T03:50:00Q",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            "anthropic-ratelimit-requests-remaining",
            "0".parse().unwrap(),
        );
        h.insert("anthropic-ratelimit-requests-limit", "50".parse().unwrap());
        h.insert(
            "anthropic-ratelimit-requests-reset",
            "2999-01-01T00:00:00Z".parse().unwrap(),
        );
        h.insert(
            "anthropic-ratelimit-tokens-reset",
            "2000-01-01T00:00:00Z".parse().unwrap(),
        );
        let hints = Hints::from_headers(&h);
        assert_eq!(
            (hints.remaining_requests, hints.limit_requests),
            (Some(0), Some(50))
        );
        assert_eq!(hints.reset_requests, Some(duration::CEILING));
        assert_eq!(
            hints.reset_tokens,
            Some(Duration::ZERO),
            "a past reset is now"
        );
        assert!(hints.exhausted_for().is_some());
    }

    #[test]
    fn reset_formats() {
        assert_eq!(parse_reset("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("850ms"), Some(Duration::from_millis(850)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_reset("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_reset("soon"), None);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        h.insert("retry-after-ms", "1500".parse().unwrap());
        h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "6m0s".parse().unwrap());
        let hints = Hints::from_headers(&h);
        assert_eq!(
            hints.retry_after,
            Some(Duration::from_millis(1500)),
            "the ms header is more precise"
        );
        assert_eq!(
            hints.exhausted_for(),
            Some(Duration::from_secs(1)),
            "without a limit: at most a second"
        );
        h.insert("x-ratelimit-limit-requests", "60".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "60s".parse().unwrap());
        assert_eq!(
            Hints::from_headers(&h).exhausted_for(),
            Some(Duration::from_secs(1)),
            "one refill step"
        );
        h.insert("x-ratelimit-remaining-requests", "3".parse().unwrap());
        assert_eq!(Hints::from_headers(&h).exhausted_for(), None);
    }

    #[test]
    fn every_hint_is_read_and_others_ignored() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("x-ratelimit-limit-requests", " 60 ".parse().unwrap());
        h.append("x-ratelimit-limit-requests", "7".parse().unwrap());
        h.insert("x-ratelimit-limit-tokens", "1000".parse().unwrap());
        h.insert("x-ratelimit-remaining-requests", "59".parse().unwrap());
        h.insert("x-ratelimit-remaining-tokens", "990".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "1s".parse().unwrap());
        h.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
        h.insert("x-ratelimit-other", "5".parse().unwrap());
        h.insert("retry-after-ms", "soon".parse().unwrap());
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(
            Hints::from_headers(&h),
            Hints {
                // An unreadable `retry-after-ms` leaves `Retry-After` in force.
                retry_after: Some(Duration::from_secs(2)),
                // The first of repeated values counts.
                limit_requests: Some(60),
                limit_tokens: Some(1000),
                remaining_requests: Some(59),
                remaining_tokens: Some(990),
                reset_requests: Some(Duration::from_secs(1)),
                reset_tokens: Some(Duration::from_secs(360)),
            }
        );
        assert_eq!(Hints::from_headers(&HeaderMap::new()), Hints::default());
    }

    #[test]
    fn hostile_hints_are_capped() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "1e30".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "1e30".parse().unwrap());
        h.insert(
            "x-ratelimit-reset-tokens",
            "99999999999999999999h".parse().unwrap(),
        );
        h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
        h.insert("x-ratelimit-limit-requests", "1".parse().unwrap());
        let hints = Hints::from_headers(&h);
        assert_eq!(hints.retry_after, Some(duration::CEILING));
        assert_eq!(hints.exhausted_for(), Some(duration::CEILING));
        h.insert("retry-after-ms", "1e300".parse().unwrap());
        assert_eq!(Hints::from_headers(&h).retry_after, Some(duration::CEILING));
        assert_eq!(
            parse_retry_after("1000000000000000000"),
            Some(duration::CEILING)
        );
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 99999999999999 00:00:00 GMT"),
            None
        );
        let far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(far, Some(duration::CEILING));
    }

    proptest::proptest! {
        #[test]
        fn any_header_values_parse_without_panic(
            values in proptest::collection::vec("[ -~]{0,40}", 7),
        ) {
            let names = [
                "retry-after", "retry-after-ms", "x-ratelimit-reset-requests",
                "x-ratelimit-reset-tokens", "x-ratelimit-remaining-requests",
                "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens",
            ];
            let mut h = HeaderMap::new();
            for (n, v) in names.iter().zip(&values) {
                if let Ok(v) = v.parse() {
                    h.insert(*n, v);
                }
            }
            let hints = Hints::from_headers(&h);
            for d in [hints.retry_after, hints.reset_requests, hints.reset_tokens, hints.exhausted_for()]
                .into_iter()
                .flatten()
            {
                proptest::prop_assert!(d <= duration::CEILING);
            }
        }

        #[test]
        fn any_date_parses_without_panic(
            day in 0u64..100, mon in 0usize..13, year in proptest::num::i64::ANY,
            h in 0u64..100, m in 0u64..100, s in 0u64..100,
        ) {
            let months = ["Jan","Feb","Mar","Apr","May","Jun","Jul","Aug","Sep","Oct","Nov","Dec","Foo"];
            let v = format!("Mon, {day:02} {} {year} {h:02}:{m:02}:{s:02} GMT", months[mon]);
            if let Some(d) = parse_retry_after(&v) {
                proptest::prop_assert!(d <= duration::CEILING);
            }
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(classify(StatusCode::OK, false), Outcome::Success);
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, false),
            Outcome::Retryable { overloaded: true }
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, true),
            Outcome::Final
        );
        assert_eq!(classify(StatusCode::BAD_REQUEST, false), Outcome::Final);
        assert_eq!(
            classify(StatusCode::PAYLOAD_TOO_LARGE, false),
            Outcome::Final
        );
        assert_eq!(
            classify(StatusCode::REQUEST_TIMEOUT, false),
            Outcome::Retryable { overloaded: false }
        );
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, false),
            Outcome::Retryable { overloaded: false }
        );
        assert!(is_quota_error(
            br#"{"error":{"code":"insufficient_quota"}}"#
        ));
    }
}
