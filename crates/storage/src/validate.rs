//! Checks a batch input file line by line before the batch starts, naming the line of every
//! problem: not JSON, no `custom_id`, a repeated `custom_id`, another method or URL than the
//! batch's endpoint, a body without a model, or a model no route serves.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::db::Error;

/// Problems listed at most; a file with more is reported by its first ones.
pub const MAX_PROBLEMS: usize = 1000;

/// One line of an input file.
#[derive(Debug, Deserialize)]
pub struct InputLine {
    pub custom_id: Option<String>,
    pub method: Option<String>,
    pub url: Option<String>,
    pub body: Option<Box<serde_json::value::RawValue>>,
}

/// One problem, shaped as OpenAI's batch `errors.data` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: u64,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
}

impl Problem {
    pub fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message, "param": self.param, "line": self.line})
    }
}

/// Reads every line of `path` (a blank line is skipped) and returns the number of requests,
/// or every problem found. `model_ok` says whether the batch's owner may send a model, or why
/// not as an error code (`model_not_found`: no route serves it; `model_not_allowed`: the key
/// may not use it) and a message.
pub fn check(
    path: &Path,
    endpoint: &str,
    model_ok: impl Fn(&str) -> Result<(), (&'static str, String)>,
) -> Result<Result<u64, Vec<Problem>>, Error> {
    check_reader(std::fs::File::open(path)?, endpoint, model_ok)
}

/// [`check`] over any reader of the file's content (a file on disk, a database's chunks).
pub fn check_reader(
    content: impl Read,
    endpoint: &str,
    model_ok: impl Fn(&str) -> Result<(), (&'static str, String)>,
) -> Result<Result<u64, Vec<Problem>>, Error> {
    let reader = BufReader::new(content);
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    let mut count = 0u64;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        let n = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        count += 1;
        if let Err(p) = check_line(&line, n, endpoint, &mut seen, &model_ok) {
            if problems.len() < MAX_PROBLEMS {
                problems.push(p);
            }
        }
    }
    if count == 0 && problems.is_empty() {
        problems.push(Problem {
            line: 0,
            code: "empty_file",
            message: "the input file has no requests".into(),
            param: None,
        });
    }
    Ok(if problems.is_empty() {
        Ok(count)
    } else {
        Err(problems)
    })
}

impl Problem {
    fn at(line: u64, code: &'static str, message: String, param: Option<&'static str>) -> Self {
        Self {
            line,
            code,
            message,
            param,
        }
    }
}

fn check_line(
    raw: &[u8],
    n: u64,
    endpoint: &str,
    seen: &mut HashSet<String>,
    model_ok: &impl Fn(&str) -> Result<(), (&'static str, String)>,
) -> Result<(), Problem> {
    let bad = |code, message: String, param| Problem::at(n, code, message, param);
    let l: InputLine = serde_json::from_slice(raw).map_err(|e| {
        bad(
            "invalid_json",
            format!("line {n} is not a JSON object of a batch request: {e}"),
            None,
        )
    })?;
    let id = l.custom_id.filter(|c| !c.is_empty()).ok_or_else(|| {
        bad(
            "missing_custom_id",
            format!("line {n} has no custom_id"),
            Some("custom_id"),
        )
    })?;
    if !seen.insert(id.clone()) {
        return Err(bad(
            "duplicate_custom_id",
            format!("line {n} repeats custom_id `{id}`"),
            Some("custom_id"),
        ));
    }
    if l.method.as_deref().is_some_and(|m| m != "POST") {
        return Err(bad(
            "invalid_method",
            format!("line {n}: only POST requests can be batched"),
            Some("method"),
        ));
    }
    match l.url.as_deref() {
        Some(u) if u == endpoint => {}
        other => {
            return Err(bad(
                "invalid_url",
                format!(
                    "line {n}: url `{}` is not this batch's endpoint `{endpoint}`",
                    other.unwrap_or("")
                ),
                Some("url"),
            ))
        }
    }
    let body = l.body.ok_or_else(|| {
        bad(
            "missing_body",
            format!("line {n} has no body"),
            Some("body"),
        )
    })?;
    check_body(body.get(), n, model_ok)
}

/// A line's body: a JSON object with a model the batch may use, not streaming.
fn check_body(
    body: &str,
    n: u64,
    model_ok: &impl Fn(&str) -> Result<(), (&'static str, String)>,
) -> Result<(), Problem> {
    let bad = |code, message: String, param| Problem::at(n, code, message, param);
    #[derive(Deserialize)]
    struct Model {
        model: Option<String>,
        stream: Option<bool>,
    }
    let m = serde_json::from_str::<Model>(body).map_err(|_| {
        bad(
            "invalid_body",
            format!("line {n}: the body is not a JSON object"),
            Some("body"),
        )
    })?;
    if m.stream == Some(true) {
        return Err(bad(
            "invalid_stream",
            format!("line {n}: batch items cannot stream; remove `stream`"),
            Some("body.stream"),
        ));
    }
    let model = m.model.ok_or_else(|| {
        bad(
            "missing_model",
            format!("line {n}: the body has no model"),
            Some("body.model"),
        )
    })?;
    model_ok(&model)
        .map_err(|(code, why)| bad(code, format!("line {n}: {why}"), Some("body.model")))
}

/// The requests of a checked input file, in order: (line number, custom_id, body).
pub fn requests(path: &Path) -> Result<impl Iterator<Item = (u64, String, String)>, Error> {
    Ok(requests_from(std::fs::File::open(path)?))
}

/// [`requests`] over any reader of the file's content.
pub fn requests_from(content: impl Read) -> impl Iterator<Item = (u64, String, String)> {
    let reader = BufReader::new(content);
    reader.split(b'\n').enumerate().filter_map(|(i, line)| {
        let line = line.ok()?;
        let l: InputLine = serde_json::from_slice(&line).ok()?;
        let n = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1);
        Some((n, l.custom_id?, l.body?.get().to_owned()))
    })
}
