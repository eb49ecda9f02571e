//! The parallel-completions runner against the real mock upstream on loopback.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use laneway_batch::{Concurrency, Progress, Request, Runner};
use laneway_mock::{MockConfig, MockServer, StatsSnapshot};
use serde_json::json;

async fn mock(cfg: MockConfig) -> MockServer {
    MockServer::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .unwrap()
}

fn held() -> MockConfig {
    let mut c = MockConfig::new();
    c.hold = true;
    c
}

fn chats(n: usize) -> Vec<Request> {
    (0..n)
        .map(|i| Request::chat(json!({"model": "mock-1", "messages": [{"role": "user", "content": format!("item {i}")}]})))
        .collect()
}

async fn stats_until(m: &MockServer, cond: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = m.stats();
        if cond(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "mock never got there: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_come_back_in_input_order_with_their_usage() {
    let m = mock(MockConfig::new()).await;
    let progress = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let seen = progress.clone();
    let runner = Runner::new(&m.url(), None)
        .concurrency(Concurrency::Fixed(4))
        .on_progress(move |p| seen.lock().unwrap().push(p));
    let mut requests = chats(30);
    requests.push(Request::chat(json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": "stream me"}]})));
    requests.push(Request::embedding(
        json!({"model": "mock-embed", "input": ["a", "b"]}),
    ));
    let report = runner.run(requests).await;
    assert_eq!(report.items.len(), 32);
    assert!(report
        .items
        .iter()
        .enumerate()
        .all(|(i, item)| item.index == i));
    assert_eq!(report.failed, 0);
    let streamed = report.items[30].result.as_ref().unwrap();
    assert!(streamed.chunks.len() > 1, "the stream's chunks are kept");
    assert!(
        streamed.usage.is_some(),
        "a streamed item reports usage too"
    );
    let sum: u64 = report
        .items
        .iter()
        .map(|i| i.result.as_ref().unwrap().usage.unwrap().total())
        .sum();
    assert_eq!(report.usage.total(), sum);
    assert!(sum > 0);
    let last = *progress
        .lock()
        .unwrap()
        .iter()
        .max_by_key(|p| p.done)
        .unwrap();
    assert_eq!(
        (last.total, last.done, last.failed, last.queued),
        (32, 32, 0, 0)
    );
    assert_eq!(last.usage.total(), sum);
    assert!(m.stats().max_in_flight <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_yields_each_item_as_it_finishes_and_dropping_it_aborts_the_rest() {
    let m = mock(held()).await;
    let runner = Runner::new(&m.url(), None).concurrency(Concurrency::Fixed(3));
    let mut items = Box::pin(runner.stream(chats(5)));
    // Three are held at the mock; one is let go, and it alone comes out.
    let release_one = async {
        stats_until(&m, |s| s.held == 3).await;
        m.release(Some(1));
        std::future::pending::<()>().await
    };
    let item = tokio::select! {
        item = items.next() => item.unwrap(),
        () = release_one => unreachable!(),
    };
    assert!(item.result.is_ok());
    assert_eq!(m.stats().completed, 1);
    drop(items);
    let s = stats_until(&m, |s| s.in_flight == 0 && s.held == 0).await;
    assert!(
        s.cancelled >= 2,
        "the running items were aborted upstream: {s:?}"
    );
    assert!(s.requests <= 4, "items not yet started never were: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_ends_the_run_and_aborts_what_runs() {
    let mut cfg = held();
    cfg.fail_first = 1;
    cfg.fail_status = 400;
    cfg.fail_code = Some("invalid_request_error".into());
    let m = mock(cfg).await;
    let runner = Runner::new(&m.url(), None)
        .concurrency(Concurrency::Fixed(4))
        .fail_fast(true);
    let run = tokio::spawn(async move { runner.run(chats(20)).await });
    // Four items wait at the mock; they are let through one by one until the failing one (the
    // first to arrive) answers, while the others are still held.
    stats_until(&m, |s| s.held == 4).await;
    while m.stats().errors_injected == 0 {
        let before = m.stats();
        m.release(Some(1));
        stats_until(&m, |s| {
            s.errors_injected == 1 || s.completed > before.completed
        })
        .await;
    }
    let report = run.await.unwrap();
    assert_eq!(report.failed, 1);
    let err = report
        .items
        .iter()
        .find_map(|i| i.result.as_ref().err())
        .unwrap();
    assert_eq!(
        (err.status, err.code.as_str()),
        (Some(400), "invalid_request_error")
    );
    let s = stats_until(&m, |s| s.in_flight == 0 && s.held == 0).await;
    assert!(s.requests <= 5, "queued items never started: {s:?}");
    assert!(s.cancelled >= 2, "in-flight items were aborted: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_item_errors_keep_their_code_and_others_succeed() {
    let mut cfg = MockConfig::new();
    cfg.fail_first = 2;
    cfg.fail_status = 429;
    cfg.fail_retry_after_ms = 1500;
    let m = mock(cfg).await;
    let runner = Runner::new(&m.url(), None)
        .concurrency(Concurrency::Fixed(1))
        .attempts(1);
    let report = runner.run(chats(5)).await;
    assert_eq!(report.failed, 2);
    for item in &report.items[..2] {
        let e = item.result.as_ref().unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str()),
            (Some(429), "rate_limit_exceeded")
        );
        assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));
    }
    assert!(report.items[2..].iter().all(|i| i.result.is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_hint_and_a_timeout_ends_an_item() {
    let mut cfg = MockConfig::new();
    cfg.fail_first = 1;
    cfg.fail_retry_after_ms = 300;
    let m = mock(cfg).await;
    let report = Runner::new(&m.url(), None).run(chats(1)).await;
    assert!(report.items[0].result.is_ok());
    assert_eq!((m.stats().requests, m.stats().rejected_429), (2, 1));

    let m = mock(held()).await;
    let report = Runner::new(&m.url(), None)
        .timeout(Duration::from_millis(300))
        .run(chats(2))
        .await;
    for item in &report.items {
        assert_eq!(item.result.as_ref().unwrap_err().code, "timeout");
    }
    stats_until(&m, |s| s.in_flight == 0 && s.held == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_bound_finds_a_hidden_capacity_with_few_429s() {
    let mut cfg = MockConfig::new();
    cfg.max_concurrent = Some(4);
    cfg.latency_ms = 10;
    cfg.fail_retry_after_ms = 0;
    let m = mock(cfg).await;
    let runner = Runner::new(&m.url(), None)
        .concurrency(Concurrency::Adaptive { max: 64 })
        .attempts(5);
    let report = runner.run(chats(300)).await;
    assert_eq!(report.failed, 0);
    let s = m.stats();
    assert!(s.max_in_flight <= 4);
    assert!(
        s.rejected_429 * 100 <= 2 * 300,
        "{} upstream 429s for 300 items",
        s.rejected_429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_in_process_enforce_a_key_limit() {
    let m = mock(MockConfig::new()).await;
    let config = laneway_config::Config::parse(&format!(
        "[[lane]]\nname = \"m\"\nurl = \"{}\"\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n\
         [[key]]\nname = \"app\"\nkey = \"sk-app\"\nconcurrency_limit = {{ max_concurrent_requests = 2 }}\non_limit = \"queue\"\n",
        m.url()
    ))
    .unwrap();
    let runner = Runner::with_lanes(config, Some("sk-app"))
        .await
        .unwrap()
        .concurrency(Concurrency::Fixed(16));
    let report = runner.run(chats(40)).await;
    assert_eq!(report.failed, 0);
    assert!(m.stats().max_in_flight <= 2, "{:?}", m.stats());
    let anonymous = Runner::with_lanes(
        laneway_config::Config::parse(&format!(
            "[[lane]]\nname = \"m\"\nurl = \"{}\"\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n[[key]]\nname = \"app\"\nkey = \"sk-app\"\n",
            m.url()
        ))
        .unwrap(),
        None,
    )
    .await
    .unwrap();
    let e = anonymous.run(chats(1)).await.items[0]
        .result
        .clone()
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (Some(401), "invalid_api_key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_rate_budget_holds_new_items_instead_of_collecting_429s() {
    // 120 rpm: a full bucket of 120, then one more every half second.
    let mut cfg = MockConfig::new();
    cfg.rpm = Some(120);
    let m = mock(cfg).await;
    let runner = Runner::new(&m.url(), None)
        .concurrency(Concurrency::Fixed(1))
        .attempts(1);
    let report = runner.run(chats(124)).await;
    assert_eq!(report.failed, 0, "every item waited for its turn");
    assert_eq!(m.stats().rejected_429, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_item_through_in_process_lanes_keeps_its_chunks_and_usage() {
    // A token-limited lane reads every answer's usage as it passes; the item gets it too.
    let m = mock(MockConfig::new()).await;
    let config = laneway_config::Config::parse(&format!(
        "[[lane]]\nname = \"m\"\nurl = \"{}\"\ntpm = 1000000\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n",
        m.url()
    ))
    .unwrap();
    let runner = Runner::with_lanes(config, None).await.unwrap();
    let req = Request::chat(
        json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": "stream me"}]}),
    );
    let report = runner.run(vec![req]).await;
    let r = report.items[0].result.as_ref().unwrap();
    assert!(r.chunks.len() > 1, "the stream's chunks are kept");
    let usage = r.usage.expect("a streamed item reports usage");
    assert!(usage.completion_tokens > 0);
    assert_eq!(report.usage, usage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_lanes_the_engine_retries_and_the_runner_does_not_retry_on_top() {
    // Every answer is a 500: the engine tries each item `max_attempts` times, and the runner's
    // own attempts (three by default) must not multiply that. Two items, four failures: below
    // the five in a row that open the lane's circuit.
    let mut cfg = MockConfig::new();
    cfg.error_rate = 1.0;
    let m = mock(cfg).await;
    let config = laneway_config::Config::parse(&format!(
        "[[lane]]\nname = \"m\"\nurl = \"{}\"\n[[route]]\nmodel = \"mock-*\"\nlanes = [\"m\"]\n\
         [retry]\nmax_attempts = 2\nbudget = {{ ratio = 1.0, min_per_second = 100 }}\n\
         backoff = {{ base = \"1ms\", max = \"2ms\" }}\n",
        m.url()
    ))
    .unwrap();
    let runner = Runner::with_lanes(config, None)
        .await
        .unwrap()
        .concurrency(Concurrency::Adaptive { max: 4 });
    let report = runner.run(chats(2)).await;
    assert_eq!(report.failed, 2);
    let e = report.items[0].result.clone().unwrap_err();
    assert_eq!(e.status, Some(500), "{e:?}");
    assert_eq!(m.stats().requests, 4, "{:?}", m.stats());
}
