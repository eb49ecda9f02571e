//! `laneway batch`: run an OpenAI Batch input file through a gateway, or through lanes in this
//! process, with bounded concurrency; the parallel-completions library does the running.
//!
//! Every input line is validated before anything is sent. Results are appended to the output
//! file one complete line at a time, flushed as each request finishes, so a killed run leaves at
//! most one partial last line; the next run with the same `-o` drops that partial line and skips
//! every `custom_id` already answered, ending with exactly one line per input line.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use laneway_batch::{Concurrency, Request, Response, Runner};
use laneway_core::wire::Endpoint;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// OpenAI Batch input file: one {"custom_id","method","url","body"} per line
    input: PathBuf,
    /// Output file (OpenAI Batch output lines); an existing one is resumed
    #[arg(long, short)]
    output: PathBuf,
    /// Gateway to send to: its root or its /v1 base URL
    #[arg(long, default_value = "http://127.0.0.1:8400")]
    url: String,
    /// API key sent as Bearer (default: the LANEWAY_API_KEY environment variable, which keeps
    /// it out of the process list)
    #[arg(long, env = "LANEWAY_API_KEY", hide_env_values = true)]
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
    #[arg(long, default_value = "10m", value_parser = duration)]
    timeout: std::time::Duration,
}

/// `--timeout`, in the grammar of every duration Laneway reads (`laneway_core::duration`).
fn duration(v: &str) -> Result<std::time::Duration, String> {
    laneway_core::duration::read(v).map_err(|e| format!("`{v}` is not a duration: {e}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    custom_id: String,
    method: String,
    url: String,
    body: Value,
}

/// The endpoints a batch line may name, as OpenAI's Batch API takes them.
const ENDPOINTS: [&str; 5] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/moderations",
];

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

/// The /v1 base URL of the gateway given: its root (`http://host:8400`) or, as OpenAI's clients
/// take it, its base URL (`http://host:8400/v1`), which must not become `/v1/v1`.
fn base_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v1") {
        url.to_owned()
    } else {
        format!("{url}/v1")
    }
}

/// The runner for the gateway URL given, or for the config's lanes in this process.
async fn runner(a: &Args) -> anyhow::Result<Runner> {
    let key = a.api_key.as_deref();
    let runner = match &a.config {
        None => Runner::try_new(&base_url(&a.url), key)
            .map_err(|e| anyhow::anyhow!("--url {}: {e}", a.url))?,
        Some(path) => {
            let config = laneway_config::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            {
                let parts = laneway_engine::Parts {
                    mocks: Some(std::sync::Arc::new(crate::mock::MockLanes::default())),
                    ..Default::default()
                };
                Runner::with_engine_parts(config, key, parts).await?
            }
        }
    };
    // One attempt per line: a gateway or the lanes already retry what is worth retrying.
    Ok(runner
        .concurrency(Concurrency::Fixed(a.concurrency))
        .timeout(a.timeout)
        .attempts(1)
        .fail_fast(a.fail_fast))
}

/// A line's endpoint; lines were checked against [`ENDPOINTS`] when read.
fn endpoint(url: &str) -> Endpoint {
    Endpoint::from_path(url).unwrap_or(Endpoint::ChatCompletions)
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    crate::logging::init(false);
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if a.timeout.is_zero() {
        bail!("--timeout must be longer than 0");
    }
    let lines = read_input(&a.input)?;
    let done = resume(&a.output)?;
    let todo: Vec<Line> = lines
        .into_iter()
        .filter(|l| !done.contains(&l.custom_id))
        .collect();
    let skipped = done.len();
    let runner = runner(&a).await?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.output)
        .with_context(|| format!("cannot open {}", a.output.display()))?;
    let total = todo.len();
    let (mut ok, mut failed) = (0usize, 0usize);
    let progress = Progress::new(total);
    let started = tokio::time::Instant::now();
    let requests = todo
        .iter()
        .map(|l| Request {
            endpoint: endpoint(&l.url),
            body: l.body.clone(),
        })
        .collect();
    let items = runner.stream(requests);
    futures_util::pin_mut!(items);
    while let Some(item) = items.next().await {
        let (record, success) = record(&todo[item.index].custom_id, item.result);
        // One write per line, flushed: a crash never leaves a line half in the file except the last.
        writeln!(out, "{record}")
            .and_then(|()| out.flush())
            .context("cannot write the output")?;
        if success {
            ok += 1;
        } else {
            failed += 1;
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

/// One output line in OpenAI's batch format, and whether the line succeeded. An answer with an
/// error status is a response (as OpenAI records it); no answer at all is an `error`.
fn record(custom_id: &str, result: Result<Response, laneway_batch::Error>) -> (Value, bool) {
    let id = laneway_core::id::new_id("batch_req");
    let e = match result {
        Ok(mut r) => {
            let request_id = std::mem::take(&mut r.request_id);
            let response =
                json!({"status_code": 200, "request_id": request_id, "body": r.into_body()});
            return (
                json!({"id": id, "custom_id": custom_id, "response": response, "error": null}),
                true,
            );
        }
        Err(e) => e,
    };
    let Some(status) = e.status else {
        let error = json!({"code": e.code, "message": e.message});
        return (
            json!({"id": id, "custom_id": custom_id, "response": null, "error": error}),
            false,
        );
    };
    let body = e
        .body
        .map(|b| *b)
        .unwrap_or_else(|| json!({"error": {"message": e.message, "code": e.code}}));
    let response = json!({"status_code": status, "request_id": e.request_id, "body": body});
    (
        json!({"id": id, "custom_id": custom_id, "response": response, "error": null}),
        false,
    )
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
