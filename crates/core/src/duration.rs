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

/// `250ms`, `30s`, `6m0s`, `1h2m3.5s`, or a bare number of seconds (OpenAI's reset format and
/// Laneway's own), saturating at [`CEILING`].
pub fn parse(v: &str) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    if let Ok(secs) = v.parse::<f64>() {
        return from_secs_f64(secs);
    }
    let mut total = 0.0_f64;
    let mut rest = v;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(split);
        let n: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        // f64 saturates to infinity, never wraps; `from_secs_f64` caps it.
        total += n * scale;
        rest = next;
    }
    from_secs_f64(total)
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
