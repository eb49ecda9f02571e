//! Durations read from outside: headers, bodies, admin input.
//!
//! Every one is parsed with saturating arithmetic and capped at [`CEILING`], so no value a client
//! or an upstream sends can overflow a clock or panic a conversion. Callers then clamp to their
//! own, tighter, bound (a request's deadline, a lane's longest pause).

use std::time::Duration;

/// The longest duration Laneway derives from outside input: one year.
pub const CEILING: Duration = Duration::from_secs(365 * 86_400);

/// Seconds as a float, saturating at [`CEILING`]. `None` for NaN and negative values.
pub fn from_secs_f64(secs: f64) -> Option<Duration> {
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    if secs >= CEILING.as_secs_f64() {
        return Some(CEILING);
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// `d` as OpenAI writes its `x-ratelimit-reset-*` headers (Go's duration format, to the
/// millisecond): `20ms`, `6s`, `1.5s`, `1m0s`, `1h2m3s`.
pub fn openai_format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, (ms / 60_000) % 60);
    let (s, frac) = ((ms / 1000) % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let frac = format!("{frac:03}");
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    }
    out
}

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("it is empty")]
    Empty,
    #[error("`{0}` is not a number")]
    Number(String),
    #[error("`{0}` is not a unit (ms, s, m, h, d, …)")]
    Unit(String),
    #[error("a number needs a unit after it")]
    NoUnit,
    #[error("it is longer than a year")]
    TooLong,
}

/// Seconds in one `unit`.
fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" | "nsec" => 1e-9,
        "us" | "µs" | "usec" => 1e-6,
        "ms" | "msec" | "msecs" => 1e-3,
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600.0,
        "d" | "day" | "days" => 86_400.0,
        _ => return None,
    })
}

/// The one grammar of every duration Laneway reads: config values, the command line,
/// `x-laneway-timeout`, admin input, upstreams' reset headers. Parts of a number and a unit,
/// spaces allowed between them: `250ms`, `1.5s`, `6m0s`, `1h 30m`, `2 days`; a bare number is
/// seconds (OpenAI's reset headers). Longer than [`CEILING`] is an error here; see [`parse`].
pub fn read(v: &str) -> Result<Duration, DurationError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(DurationError::Empty);
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return Err(DurationError::Number(v.to_owned()));
        }
        return within_ceiling(secs);
    }
    let mut total = 0.0_f64;
    let mut rest = v;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let n: f64 = num
            .parse()
            .map_err(|_| DurationError::Number(num.to_owned()))?;
        let tail = tail.trim_start();
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::NoUnit);
        }
        let scale = unit_seconds(unit).ok_or_else(|| DurationError::Unit(unit.to_owned()))?;
        // f64 saturates to infinity, never wraps.
        total += n * scale;
        rest = next.trim_start();
    }
    within_ceiling(total)
}

fn within_ceiling(secs: f64) -> Result<Duration, DurationError> {
    if secs > CEILING.as_secs_f64() {
        return Err(DurationError::TooLong);
    }
    from_secs_f64(secs).ok_or(DurationError::TooLong)
}

/// [`read`] for values from the request path: anything longer than a year is a year
/// (saturating, so no value a client or an upstream sends fails for being large); `None` when
/// the text is not a duration.
pub fn parse(v: &str) -> Option<Duration> {
    match read(v) {
        Ok(d) => Some(d),
        Err(DurationError::TooLong) => Some(CEILING),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn openai_reset_format_reads_back() {
        for (ms, text) in [
            (0, "0s"),
            (20, "20ms"),
            (6_000, "6s"),
            (1_500, "1.5s"),
            (60_000, "1m0s"),
            (11_895, "11.895s"),
            (3_723_000, "1h2m3s"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(openai_format(d), text);
            assert_eq!(parse(text), Some(d), "{text}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(parse("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse("850ms"), Some(Duration::from_millis(850)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse("soon"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("NaN"), None);
    }

    #[test]
    fn one_grammar_reads_config_and_command_line_forms() {
        let secs = Duration::from_secs;
        for (text, d) in [
            ("1h 30m", secs(5_400)),
            ("2 days", secs(172_800)),
            ("10 min", secs(600)),
            ("  30s ", secs(30)),
            ("500us", Duration::from_micros(500)),
            ("1m 0.5s", Duration::from_millis(60_500)),
        ] {
            assert_eq!(read(text), Ok(d), "{text}");
        }
        assert_eq!(
            read("10 parsecs"),
            Err(DurationError::Unit("parsecs".into()))
        );
        assert_eq!(read("5 5s"), Err(DurationError::NoUnit));
        assert_eq!(read("400d"), Err(DurationError::TooLong));
        assert_eq!(parse("400d"), Some(CEILING));
        assert_eq!(read(".s"), Err(DurationError::Number(".".into())));
    }

    #[test]
    fn huge_values_saturate() {
        for v in ["1e20", "1e308", "inf", "99999999999999999999h", "1e30"] {
            assert_eq!(parse(v), Some(CEILING), "{v}");
        }
        assert_eq!(from_secs_f64(f64::INFINITY), Some(CEILING));
        assert_eq!(from_secs_f64(f64::MAX), Some(CEILING));
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(v in "\\PC{0,24}") {
            if let Some(d) = parse(&v) {
                prop_assert!(d <= CEILING);
            }
        }

        #[test]
        fn any_float_is_bounded(secs in proptest::num::f64::ANY) {
            if let Some(d) = from_secs_f64(secs) {
                prop_assert!(d <= CEILING);
            }
        }

        #[test]
        fn unit_strings_are_bounded(parts in proptest::collection::vec(("[0-9]{0,30}(\\.[0-9]{0,5})?", "ms|s|m|h"), 1..5)) {
            let v: String = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
            if let Some(d) = parse(&v) {
                prop_assert!(d <= CEILING);
            }
        }
    }
}
