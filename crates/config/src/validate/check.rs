//! The checker every section's validation writes its problems to, and the small parsers they
//! share: below `validate` and its sections, so they all depend on it and it on none of them.

use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

use laneway_core::Secret;

use crate::error::{line_of, Problem};
use crate::model::*;
use crate::raw::*;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8400";

pub(super) struct Checker<'t> {
    pub(super) text: &'t str,
    pub(super) problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn line(&self, span: &std::ops::Range<usize>) -> Option<usize> {
        Some(line_of(self.text, span.start))
    }

    /// The line of an optional section, when the file has it.
    pub(super) fn section_line<T>(&self, section: Option<&toml::Spanned<T>>) -> Option<usize> {
        section.map(|s| line_of(self.text, s.span().start))
    }

    /// A secret or URL must be exactly what it says: a control character or surrounding
    /// whitespace (a pasted newline) would make it silently never match.
    pub(super) fn clean(&mut self, line: Option<usize>, path: &str, value: &str) -> bool {
        let problem = if value.chars().any(char::is_control) {
            "contains a control character"
        } else if value.trim() != value {
            "has whitespace around it"
        } else {
            return true;
        };
        self.push(line, path, problem);
        false
    }

    /// A secret: non-empty and clean.
    pub(super) fn secret(
        &mut self,
        line: Option<usize>,
        path: &str,
        v: &EnvString,
    ) -> Option<Secret<String>> {
        if v.0.is_empty() {
            self.push(line, path, "is empty");
            return None;
        }
        self.clean(line, path, &v.0)
            .then(|| Secret::new(v.0.clone()))
    }

    pub(super) fn push(
        &mut self,
        line: Option<usize>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            line,
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(
        &mut self,
        line: Option<usize>,
        path: &str,
        value: Option<&EnvString>,
        default: Duration,
    ) -> Duration {
        let Some(v) = value else { return default };
        match laneway_core::duration::read(&v.0) {
            Err(laneway_core::duration::DurationError::TooLong) => {
                self.push(line, path, "must be at most a year");
                default
            }
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.push(line, path, "must be longer than zero");
                default
            }
            Err(e) => {
                self.push(
                    line,
                    path,
                    format!(
                        "`{}` is not a duration ({e}); write e.g. \"250ms\", \"30s\", \"10m\"",
                        v.0
                    ),
                );
                default
            }
        }
    }

    pub(super) fn limits(
        &mut self,
        line: Option<usize>,
        prefix: &str,
        concurrency: Option<&RawConcurrency>,
        rate: Option<&RawRate>,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> Limits {
        let mut limits = Limits::default();
        if let Some(c) = concurrency {
            limits.max_concurrent = NonZeroU32::new(c.max_concurrent_requests);
            if limits.max_concurrent.is_none() {
                self.push(
                    line,
                    format!("{prefix}.concurrency_limit.max_concurrent_requests"),
                    "must be at least 1 (remove the limit for unlimited)",
                );
            }
        }
        if let Some(r) = rate {
            let burst = r
                .burst_size
                .unwrap_or_else(|| r.requests_per_second.ceil().max(1.0) as u32);
            match (r.requests_per_second, NonZeroU32::new(burst)) {
                (rps, Some(burst)) if rps.is_finite() && rps > 0.0 => {
                    limits.rate = Some(Rate {
                        per_second: rps,
                        burst,
                    });
                }
                (rps, _) if !(rps.is_finite() && rps > 0.0) => self.push(
                    line,
                    format!("{prefix}.rate_limit.requests_per_second"),
                    "must be a number above zero",
                ),
                _ => self.push(
                    line,
                    format!("{prefix}.rate_limit.burst_size"),
                    "must be at least 1",
                ),
            }
        }
        if let Some(v) = rpm {
            limits.rpm = u32::try_from(v).ok().and_then(NonZeroU32::new);
            if limits.rpm.is_none() {
                self.push(
                    line,
                    format!("{prefix}.rpm"),
                    "must be between 1 and 4294967295",
                );
            }
        }
        if let Some(v) = tpm {
            limits.tpm = NonZeroU64::new(v);
            if limits.tpm.is_none() {
                self.push(line, format!("{prefix}.tpm"), "must be at least 1");
            }
        }
        limits
    }
}

/// Parses a size: plain bytes or a number with `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. \"32MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}`; use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("`{s}` is too large"))
}
