//! Onwards configs as they are: served, checked and imported, with Onwards' 429s.

use std::process::Command;

use serde_json::json;

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_laneway");

fn onwards_config(mock_url: &str) -> String {
    // Onwards appends the client's path (/v1/...) to the target's URL.
    let base = mock_url.trim_end_matches("/v1");
    json!({
        "auth": {
            "key_definitions": {
                "basic_user": { "key": "sk-basic", "concurrency_limit": { "max_concurrent_requests": 1 } },
                "burst_user": { "key": "sk-burst", "rate_limit": { "requests_per_second": 0.01, "burst_size": 2 } }
            }
        },
        "targets": {
            "mock-small": {
                "url": base,
                "keys": ["basic_user", "burst_user"],
                "concurrency_limit": { "max_concurrent_requests": 2 }
            }
        }
    })
    .to_string()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onwards_config_serves_with_its_limits_and_429_codes() {
    let m = held_mock().await;
    let dir = std::env::temp_dir().join(format!("laneway-onwards-{}", std::process::id()));
    let path = write(&dir, "config.json", &onwards_config(&m.url()));
    let g = file_gateway(&path).await;
    let c = client();
    let send = |key: &'static str| {
        let (c, addr) = (c.clone(), g.addr);
        tokio::spawn(async move {
            let r = c
                .post(url(addr, "/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat_body("mock-small"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let code = if status == 200 {
                String::new()
            } else {
                error_code(r).await
            };
            (status, code)
        })
    };
    // The key's own concurrency of 1: a second request at once is refused.
    let first = send("sk-basic");
    stats_until(&m, |s| s.held == 1).await;
    assert_eq!(
        send("sk-basic").await.unwrap(),
        (429, "concurrency_limit_exceeded".to_owned())
    );
    // The target's concurrency of 2: full with a second key's request held, a third is refused.
    let second = send("sk-burst");
    stats_until(&m, |s| s.held == 2).await;
    assert_eq!(
        send("sk-burst").await.unwrap(),
        (429, "concurrency_limit_exceeded".to_owned())
    );
    m.set_hold(false);
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200);
    // The burst key's bucket holds 2 and refills in 100 s; a refused request took nothing, so
    // one more passes and the next is rate limited.
    assert_eq!(send("sk-burst").await.unwrap().0, 200);
    assert_eq!(
        send("sk-burst").await.unwrap(),
        (429, "rate_limit".to_owned())
    );
    assert_eq!(send("sk-nobody").await.unwrap().0, 401);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_and_import_read_onwards_json() {
    let dir = std::env::temp_dir().join(format!("laneway-onwards-cli-{}", std::process::id()));
    let good = write(
        &dir,
        "onwards.json",
        &onwards_config("http://127.0.0.1:9/v1"),
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mock-small"), "{text}");

    let out = Command::new(BIN).arg("import").arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(toml.contains("on_limit = \"reject\""), "{toml}");
    let imported = write(&dir, "imported.toml", &toml);
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&imported)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the import is a valid config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["import", "--queue"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("on_limit = \"queue\""));

    let bad = write(
        &dir,
        "bad.json",
        "{\n  \"targets\": {\n    \"m\": { \"url\": [] }\n  }\n}\n",
    );
    for args in [vec!["check", "--config"], vec!["import"]] {
        let out = Command::new(BIN).args(&args).arg(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("targets.m.url") && err.contains(":3"),
            "{args:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
