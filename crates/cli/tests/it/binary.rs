//! The `laneway` binary as users run it: port 0, the demo, SIGTERM drain, `check`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_laneway");

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `laneway ARGS` in `dir` and reads its `listening on http://ADDR` line; stdout keeps
/// being drained so the process never blocks on a full pipe.
pub fn spawn(
    args: &[&str],
    dir: &std::path::Path,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).envs(env.iter().copied());
    spawn_command(cmd, stderr)
}

/// Spawns `laneway ARGS` with at most `nofile` open files (`ulimit -n`), as an operator's
/// service manager might.
pub fn spawn_limited(nofile: u32, args: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .current_dir(std::env::temp_dir());
    let (child, addr) = spawn_command(cmd, Stdio::null());
    (Proc(child), addr)
}

pub fn spawn_command(mut cmd: Command, stderr: Stdio) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("laneway starts");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on http://").map(str::to_owned))
        .expect("a listening line");
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Starts `laneway ARGS`, killed when the returned guard drops.
fn start(args: &[&str]) -> (Proc, String) {
    let (child, addr) = spawn(args, &std::env::temp_dir(), &[], Stdio::null());
    (Proc(child), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_on_port_zero_and_exits_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("laneway-demo-cwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut child, addr) = spawn(
        &["serve", "--listen", "127.0.0.1:0"],
        &dir,
        &[],
        Stdio::null(),
    );
    let c = client();
    let base = format!("http://{addr}");
    let v: Value = c
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body("mock-demo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion");
    for path in ["/healthz", "/readyz", "/metrics", "/ui"] {
        assert_eq!(
            c.get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    sigterm(&child);
    let code = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(code.success(), "{code:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_stream_finish_then_exits() {
    let m = held_mock().await;
    let dir = std::env::temp_dir().join(format!("laneway-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[lane]]\nname = \"up\"\nurl = \"{}\"\n[[route]]\nmodel = \"*\"\nlanes = [\"up\"]\n",
            m.url()
        ),
    )
    .unwrap();
    let args = [
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let (mut child, addr) = spawn(&args, &dir, &[], Stdio::null());
    let stream = tokio::spawn(async move {
        let r = client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&stream_body("mock-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    });
    // The stream is held at the mock when the signal comes, so only a draining gateway can
    // deliver its end.
    stats_until(&m, |s| s.held == 1).await;
    sigterm(&child);
    m.release(None);
    let text = stream.await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let code = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(code.success(), "{code:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_a_config_and_mock_runs_standalone() {
    let (_mock, maddr) = start(&["mock", "--listen", "127.0.0.1:0"]);
    let dir = std::env::temp_dir().join(format!("laneway-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gw.toml");
    std::fs::write(
        &cfg,
        format!("[[lane]]\nname = \"up\"\nurl = \"http://{maddr}/v1\"\n[[route]]\nmodel = \"*\"\nlanes = [\"up\"]\n"),
    )
    .unwrap();
    let (_gw, gaddr) = start(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let r = client()
        .post(format!("http://{gaddr}/v1/chat/completions"))
        .json(&chat_body("anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stats: Value = client()
        .get(format!("http://{maddr}/mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["completed"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_prints_every_problem_with_its_line_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("laneway-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[lane]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/v1\"\n\n[[route]]\nmodel = \"x-*\"\nlanes = [\"a\", \"b\"]\n\n[[key]]\nname = \"k\"\nkey = \"s\"\nweight = 0\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5: route[0].lanes[1]: no lane is named `b`"),
        "{err}"
    );
    assert!(err.contains("bad.toml:9: key[0].weight"), "{err}");

    let good = dir.join("good.toml");
    std::fs::write(&good, "[[lane]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/v1\"\napi_key = \"sk-secret-value\"\n[[route]]\nmodel = \"x-*\"\nlanes = [\"a\"]\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("x-* -> a") && !text.contains("sk-secret-value"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn batch_input(dir: &std::path::Path, n: usize, bad_model_at: Option<usize>) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let model = if Some(i) == bad_model_at { "nope-1" } else { "mock-1" };
            serde_json::json!({"custom_id": format!("item-{i}"), "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": format!("prompt {i}")}]}})
            .to_string()
        })
        .collect();
    let path = dir.join("input.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn output_ids(path: &std::path::Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn batch_runs_every_line_once_and_resumes_after_a_crash() {
    let dir = std::env::temp_dir().join(format!("laneway-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lanes.toml");
    std::fs::write(&config, "[[lane]]\nname = \"mock\"\nkind = \"mock\"\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"mock\"]\n").unwrap();
    let input = batch_input(&dir, 30, Some(7));
    let output = dir.join("out.jsonl");
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args([
                "batch",
                input.to_str().unwrap(),
                "-o",
                output.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--concurrency", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("29 succeeded, 1 failed"), "{summary}");
    // Not a terminal: a plain progress line per tenth of the work, no bar.
    assert!(
        summary.contains("batch: 30/30 done (100%), 1 failed"),
        "{summary}"
    );
    assert!(summary.contains("batch: 3/30 done (10%)"), "{summary}");
    let text = std::fs::read_to_string(&output).unwrap();
    let bad = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["custom_id"] == "item-7")
        .unwrap();
    assert_eq!(bad["response"]["status_code"], 404);
    assert_eq!(bad["response"]["body"]["error"]["code"], "model_not_found");
    let good = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["custom_id"] == "item-0")
        .unwrap();
    assert_eq!(good["response"]["body"]["object"], "chat.completion");
    assert!(good["error"].is_null());

    // A run killed mid-way: ten complete lines and half of an eleventh.
    let kept: Vec<&str> = text.lines().take(10).collect();
    std::fs::write(
        &output,
        kept.join("\n") + "\n" + &text.lines().nth(10).unwrap()[..20],
    )
    .unwrap();
    let out = run(&[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("10 already done"));
    let ids = output_ids(&output);
    let mut expected: Vec<String> = (0..30).map(|i| format!("item-{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "exactly one line per input line");
    // Every output line has its own id, across the two runs.
    let line_ids: std::collections::HashSet<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(line_ids.len(), 30);
    assert!(line_ids.iter().all(|id| id.starts_with("batch_req_")));

    // --fail-fast stops with a non-zero exit after the failing line.
    std::fs::remove_file(&output).unwrap();
    let out = run(&["--fail-fast", "--concurrency", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(output_ids(&output).len() < 30);

    // Bad input is refused before anything runs, naming the line.
    std::fs::write(&input, "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\nnot json\n").unwrap();
    std::fs::remove_file(&output).unwrap();
    let out = run(&[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("input.jsonl:2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!output.exists(), "nothing was written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn batch_refuses_flags_that_cannot_work_before_writing_anything() {
    let dir = std::env::temp_dir().join(format!("laneway-batch-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = batch_input(&dir, 3, None);
    let output = dir.join("out.jsonl");
    for (flags, says) in [
        (&["--url", "localhost:8400"][..], "--url localhost:8400"),
        (
            &["--url", "ftp://127.0.0.1:1"][..],
            "--url ftp://127.0.0.1:1",
        ),
        (&["--timeout", "0s"][..], "--timeout must be longer than 0"),
        (
            &["--concurrency", "0"][..],
            "--concurrency must be at least 1",
        ),
    ] {
        let out = Command::new(BIN)
            .args([
                "batch",
                input.to_str().unwrap(),
                "-o",
                output.to_str().unwrap(),
            ])
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert!(!output.exists(), "{flags:?}: nothing was written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_can_be_json() {
    let dir = std::env::temp_dir().join(format!("laneway-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let args = ["serve", "--listen", "127.0.0.1:0", "--log-format", "json"];
    let (mut child, addr) = spawn(&args, &dir, &[("RUST_LOG", "info")], Stdio::piped());
    let r = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-request-id", "log-me")
        .json(&chat_body("mock-1"))
        .send()
        .await
        .unwrap();
    let gateway_id = r.headers()["x-laneway-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    r.bytes().await.unwrap();
    let err = child.stderr.take().unwrap();
    // Read on a thread of its own, so a log line that never comes fails the test after a
    // bound instead of blocking it forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("log-me") && tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the request log line within 30 s");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["target"], "laneway::request");
    assert_eq!(v["client_request_id"], "log-me");
    assert!(v["id"].as_str().unwrap().starts_with("req_"), "{v}");
    assert_eq!(v["id"], gateway_id);
    assert_eq!(v["status"], 200);
    assert_eq!(v["lane"], "mock");
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["completion_tokens"], 16);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file() {
    let dir = std::env::temp_dir().join(format!("laneway-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("laneway.toml");
    let write = |limit: u32| {
        let text = format!(
            "[server]\nadmin_key = \"adm\"\n[[lane]]\nname = \"mock\"\nkind = \"mock\"\nconcurrency_limit = {{ max_concurrent_requests = {limit} }}\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"mock\"]\n"
        );
        std::fs::write(&cfg, text).unwrap();
    };
    write(3);
    // No --config: ./laneway.toml in the working directory is read.
    let (child, addr) = spawn(
        &["serve", "--listen", "127.0.0.1:0"],
        &dir,
        &[],
        Stdio::null(),
    );
    let child = Proc(child);
    let c = client();
    let limit = || async {
        let v: Value = c
            .get(format!("http://{addr}/admin/lanes"))
            .bearer_auth("adm")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v[0]["limit"].as_u64()
    };
    assert_eq!(limit().await, Some(3));
    write(7);
    let status = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        until(Duration::from_secs(5), || async {
            limit().await == Some(7)
        })
        .await
    );
    let r = c
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&chat_body("mock-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_mock_refuses_flags_that_describe_no_upstream() {
    for (flags, says) in [
        (
            &["--fail-status", "99"][..],
            "--fail-status must be an error status",
        ),
        (
            &["--tokens-per-second", "NaN"][..],
            "--tokens-per-second must be",
        ),
        (
            &["--output-tokens", "4294967295"][..],
            "--output-tokens must be at most",
        ),
        (
            &["--error-rate", "2"][..],
            "--error-rate must be between 0 and 1",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["mock", "--listen", "127.0.0.1:0"])
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    }
}

/// `--url` takes a gateway's root or its `/v1` base URL, the form OpenAI's clients take; both
/// reach the same endpoint (here the mock, which speaks the same API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_takes_a_root_or_a_base_url() {
    let m = crate::util::mock(crate::util::mock_cfg()).await;
    let dir = std::env::temp_dir().join(format!("laneway-batch-url-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = batch_input(&dir, 2, None);
    for url in [
        format!("http://{}", m.addr),
        format!("http://{}/v1/", m.addr),
    ] {
        let output = dir.join("out.jsonl");
        let _ = std::fs::remove_file(&output);
        let args = [
            "batch",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--url",
            &url,
        ]
        .map(str::to_owned);
        let out =
            tokio::task::spawn_blocking(move || Command::new(BIN).args(args).output().unwrap())
                .await
                .unwrap();
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in std::fs::read_to_string(&output).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["response"]["status_code"], 200, "{url}: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A port held by one gateway is refused to a second one, whatever its config: two gateways
/// sharing a port would split its clients between them (a keyless demo answering half of a
/// keyed gateway's requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_a_used_port_fails_at_start() {
    let (_first, addr) = start(&["serve", "--listen", "127.0.0.1:0", "--workers", "2"]);
    let second = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", &addr, "--workers", "2"])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    // A gateway that did start would serve until killed: the bound keeps the test from hanging.
    let out = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .unwrap_or_else(|_| panic!("the second gateway started on {addr} and kept serving"))
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second gateway started: {err}");
    assert!(
        err.to_lowercase().contains("address already in use") && err.contains(&addr),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "the second gateway printed a listening line"
    );
}

/// The demo's storage is a new private directory each start, under a name no other local user
/// can predict, and it is gone after the demo exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_stores_in_a_fresh_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let start_demo = || {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines().map_while(Result::ok);
        let dir = lines
            .find_map(|l| {
                l.trim()
                    .strip_prefix("storage: ")
                    .and_then(|rest| rest.split(" (").next())
                    .map(std::path::PathBuf::from)
            })
            .expect("a storage line");
        std::thread::spawn(move || for _ in lines {});
        (child, dir)
    };
    let (first, dir_a) = start_demo();
    let (second, dir_b) = start_demo();
    assert_ne!(dir_a, dir_b);
    for (child, dir) in [(first, dir_a), (second, dir_b)] {
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert!(meta.is_dir() && !meta.file_type().is_symlink());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o700,
            "{}",
            dir.display()
        );
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains(&child.id().to_string()), "{name}");
        sigterm(&child);
        let mut child = child;
        let code = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(code.success());
        assert!(!dir.exists(), "{} outlived the demo", dir.display());
    }
}

/// A text log written to a file holds no colour escapes: colour is for terminals only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_holds_no_escape_bytes() {
    let dir = std::env::temp_dir().join(format!("laneway-logfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("laneway.log");
    let file = std::fs::File::create(&log).unwrap();
    let args = ["serve", "--listen", "127.0.0.1:0"];
    let (mut child, addr) = spawn(&args, &dir, &[("RUST_LOG", "info")], Stdio::from(file));
    let r = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-request-id", "logged-to-a-file")
        .json(&chat_body("mock-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    sigterm(&child);
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let text = std::fs::read(&log).unwrap();
    let shown = String::from_utf8_lossy(&text);
    assert!(shown.contains("logged-to-a-file"), "{shown}");
    assert!(!text.contains(&0x1b), "escape bytes in:\n{shown}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The lines `serve` prints up to and including the metrics URL; the process is then stopped.
fn startup_lines(args: &[&str], dir: &std::path::Path) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        let done = line.contains("metrics:");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

/// The startup hint runs as printed: it names a model a route serves and, with keys, sends one.
#[test]
fn the_startup_hint_names_a_served_model_and_the_key_it_needs() {
    let demo =
        startup_lines(&["serve", "--listen", "127.0.0.1:0"], &std::env::temp_dir()).join("\n");
    assert!(demo.contains("\"model\":\"mock-1\""), "{demo}");
    assert!(!demo.contains("Authorization"), "{demo}");

    let dir = std::env::temp_dir().join(format!("laneway-hint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gw.toml");
    std::fs::write(
        &cfg,
        "[[lane]]\nname = \"ds\"\nurl = \"http://127.0.0.1:9/v1\"\nmodels = [\"deepseek-chat\"]\n\
         [[route]]\nmodel = \"deepseek-*\"\nlanes = [\"ds\"]\n\
         [[key]]\nname = \"team\"\nkey = \"sk-team-secret\"\n",
    )
    .unwrap();
    let keyed = startup_lines(
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &dir,
    )
    .join("\n");
    assert!(keyed.contains("\"model\":\"deepseek-chat\""), "{keyed}");
    assert!(
        keyed.contains("Authorization: Bearer $LANEWAY_KEY"),
        "{keyed}"
    );
    assert!(!keyed.contains("sk-team-secret"), "{keyed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `laneway batch` takes its key from LANEWAY_API_KEY, so it need not appear in the process
/// list; a wrong key is per-line 401s, the right one succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reads_its_key_from_the_environment() {
    let m = crate::util::mock(crate::util::mock_cfg()).await;
    let g = simple(
        &m.url(),
        "",
        "[[key]]\nname = \"team\"\nkey = \"sk-from-env\"\n",
    )
    .await;
    let dir = std::env::temp_dir().join(format!("laneway-batch-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = batch_input(&dir, 2, None);
    for (key, status) in [("sk-wrong", 401), ("sk-from-env", 200)] {
        let output = dir.join(format!("out-{status}.jsonl"));
        let mut cmd = Command::new(BIN);
        cmd.args([
            "batch",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ])
        .args(["--url", &format!("http://{}", g.addr)])
        .env("LANEWAY_API_KEY", key);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in std::fs::read_to_string(&output).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["response"]["status_code"], status, "{key}: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(
            text.contains("serve") && text.contains("listen"),
            "{shell}: {text}"
        );
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
