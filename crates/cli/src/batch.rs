//! `laneway batch`: run an OpenAI Batch input file through a gateway with bounded concurrency.
//!
//! Every input line is validated before anything is sent. Results are appended to the output
//! file one complete line at a time, flushed as each request finishes, so a killed run leaves at
//! most one partial last line; the next run with the same `-o` drops that partial line and skips
//! every `custom_id` already answered, ending with exactly one line per input line.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use laneway_upstream::{UpstreamClient, UpstreamRequest};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// OpenAI Batch input file: one {"custom_id","method","url","body"} per line
    input: PathBuf,
    /// Output file (OpenAI Batch output lines); an existing one is resumed
    #[arg(long, short)]
    output: PathBuf,
    /// Gateway to send to
    #[arg(long, default_value = "http://127.0.0.1:8400")]
    url: String,
    /// API key sent as Bearer
    #[arg(long)]
    api_key: Option<String>,
    /// Run in-process through the lanes of this config instead of a gateway URL
    #[arg(long)]
    config: Option<PathBuf>,
    /// Requests in flight at once
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Stop after the first failed line (exit 1)
    #[arg(long)]
    fail_fast: bool,
    /// Deadline per request, from sending to the end of the answer
    #[arg(long, default_value = "10m")]
    timeout: humantime::Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    custom_id: String,
    method: String,
    url: String,
    body: Value,
}

const ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<Line>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let line: Line = serde_json::from_str(raw)
            .with_context(|| format!("{}:{n}: not a batch line", path.display()))?;
        if line.method != "POST" {
            bail!(
                "{}:{n}: method must be POST, not {}",
                path.display(),
                line.method
            );
        }
        if !ENDPOINTS.contains(&line.url.as_str()) {
            bail!(
                "{}:{n}: url must be one of {}, not {}",
                path.display(),
                ENDPOINTS.join(", "),
                line.url
            );
        }
        if !line.body.is_object() {
            bail!("{}:{n}: body must be a JSON object", path.display());
        }
        if !seen.insert(line.custom_id.clone()) {
            bail!(
                "{}:{n}: custom_id `{}` appears twice",
                path.display(),
                line.custom_id
            );
        }
        lines.push(line);
    }
    Ok(lines)
}

/// The custom_ids already answered, after cutting a partial last line left by a killed run.
fn resume(path: &PathBuf) -> anyhow::Result<HashSet<String>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(HashSet::new());
    };
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(complete as u64)?;
    }
    Ok(text[..complete]
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["custom_id"].as_str().map(str::to_owned))
        .collect())
}

/// Where requests go: the gateway URL given, or a private gateway on loopback serving the
/// config's lanes in-process (kept alive by the returned handle).
async fn target(a: &Args) -> anyhow::Result<(String, Option<laneway_gateway::Gateway>)> {
    let Some(path) = &a.config else {
        return Ok((a.url.trim_end_matches('/').to_owned(), None));
    };
    let config = laneway_config::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gw = laneway_gateway::Gateway::start(
        config,
        Some(path.clone()),
        Some(([127, 0, 0, 1], 0).into()),
    )
    .await?;
    Ok((format!("http://{}", gw.addr), Some(gw)))
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    crate::logging::init(false);
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let lines = read_input(&a.input)?;
    let done = resume(&a.output)?;
    let todo: Vec<Line> = lines
        .into_iter()
        .filter(|l| !done.contains(&l.custom_id))
        .collect();
    let skipped = done.len();

    let (base, _gateway) = target(&a).await?;

    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.output)
        .with_context(|| format!("cannot open {}", a.output.display()))?;
    let client = UpstreamClient::new(Duration::from_secs(10));
    let timeout: Duration = a.timeout.into();
    let total = todo.len();
    let (mut ok, mut failed) = (0usize, 0usize);
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Progress::new(total);
    let started = tokio::time::Instant::now();

    let results = futures_util::stream::iter(todo)
        .map(|line| {
            let (client, base, key, stop) = (
                client.clone(),
                base.clone(),
                a.api_key.clone(),
                stop.clone(),
            );
            async move {
                if stop.load(Ordering::Acquire) {
                    return None;
                }
                Some(one(&client, &base, key.as_deref(), timeout, line).await)
            }
        })
        .buffer_unordered(a.concurrency);
    futures_util::pin_mut!(results);
    while let Some(result) = results.next().await {
        let Some((record, success)) = result else {
            continue;
        };
        // One write per line, flushed: a crash never leaves a line half in the file except the last.
        writeln!(out, "{record}")
            .and_then(|()| out.flush())
            .context("cannot write the output")?;
        if success {
            ok += 1;
        } else {
            failed += 1;
            if a.fail_fast {
                stop.store(true, Ordering::Release);
            }
        }
        progress.advance(ok, failed);
    }
    progress.finish();
    eprintln!(
        "batch: {} lines: {ok} succeeded, {failed} failed, {skipped} already done, {} not run; {:.1}s",
        total + skipped,
        total - ok - failed,
        started.elapsed().as_secs_f64()
    );
    Ok(if a.fail_fast && failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Sends one line; returns its output record and whether it succeeded.
async fn one(
    client: &UpstreamClient,
    base: &str,
    key: Option<&str>,
    timeout: Duration,
    line: Line,
) -> (Value, bool) {
    let id = laneway_core::id::new_id("batch_req");
    let url = format!("{base}{}", line.url);
    let body = bytes::Bytes::from(line.body.to_string());
    let request = UpstreamRequest {
        url: &url,
        api_key: key,
        body,
        request_id: &id,
        first_byte_timeout: timeout,
    };
    let outcome = tokio::time::timeout(timeout, async {
        let resp = client.send(request).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(&id)
            .to_owned();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, request_id, bytes))
    })
    .await;
    match outcome {
        Ok(Ok((status, request_id, bytes))) => {
            let body: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            let record = json!({
                "id": id,
                "custom_id": line.custom_id,
                "response": {"status_code": status, "request_id": request_id, "body": body},
                "error": null,
            });
            (record, (200..300).contains(&status))
        }
        Ok(Err(message)) => (
            failure(&id, &line.custom_id, "connection_error", &message),
            false,
        ),
        Err(_) => (
            failure(
                &id,
                &line.custom_id,
                "timeout",
                "the request did not finish within --timeout",
            ),
            false,
        ),
    }
}

/// Progress on standard error: a live bar (done/total, rate, ETA, failures) on a terminal, and
/// a plain line at every tenth of the work otherwise, so logs stay readable.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    /// The last tenth reported as a plain line.
    tenth: std::cell::Cell<usize>,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total as u64),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let style = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Self {
            bar,
            total,
            tenth: std::cell::Cell::new(0),
        }
    }

    fn advance(&self, ok: usize, failed: usize) {
        let done = ok + failed;
        match &self.bar {
            Some(bar) => {
                bar.set_position(done as u64);
                bar.set_message(format!("{failed} failed"));
            }
            None => {
                let tenth = (done * 10).checked_div(self.total).unwrap_or(10);
                if tenth > self.tenth.get() {
                    self.tenth.set(tenth);
                    eprintln!(
                        "batch: {done}/{} done ({}%), {failed} failed",
                        self.total,
                        done * 100 / self.total.max(1)
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn failure(id: &str, custom_id: &str, code: &str, message: &str) -> Value {
    json!({"id": id, "custom_id": custom_id, "response": null, "error": {"code": code, "message": message}})
}
