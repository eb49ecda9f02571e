//! Parallel completions for programs: run many OpenAI-compatible requests with bounded or
//! adaptive concurrency and learn what happened to each.
//!
//! A [`Runner`] sends to a base URL (a Laneway gateway, a provider, a local server) or through
//! the lanes of a Laneway config in this process ([`Runner::with_lanes`]), so lane and key
//! limits, fair queues, retries and adaptive limits apply without running a server.
//!
//! ```no_run
//! use laneway_batch::{Concurrency, Request, Runner};
//! use serde_json::json;
//!
//! # async fn demo() {
//! let runner = Runner::new("http://127.0.0.1:8400/v1", Some("sk-team"))
//!     .concurrency(Concurrency::Fixed(16))
//!     .timeout(std::time::Duration::from_secs(60))
//!     .on_progress(|p| eprintln!("{}/{} done, {} failed", p.done, p.total, p.failed));
//! let prompts = ["a lighthouse", "a fox", "a market at dawn"];
//! let requests = prompts
//!     .iter()
//!     .map(|p| Request::chat(json!({
//!         "model": "deepseek-chat",
//!         "messages": [{"role": "user", "content": format!("An image prompt for {p}")}],
//!     })))
//!     .collect();
//! let report = runner.run(requests).await;
//! for item in &report.items {
//!     match &item.result {
//!         Ok(r) => println!("{}: {}", item.index, r.body()["choices"][0]["message"]["content"]),
//!         Err(e) => println!("{}: failed: {e}", item.index),
//!     }
//! }
//! println!("{} tokens in all", report.usage.total());
//! # }
//! ```
//!
//! Results as they finish, stopping at the first error:
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use laneway_batch::{Concurrency, Request, Runner};
//!
//! # async fn demo(requests: Vec<Request>) {
//! let runner = Runner::new("http://127.0.0.1:8400/v1", None)
//!     .concurrency(Concurrency::Adaptive { max: 64 })
//!     .fail_fast(true);
//! let mut items = std::pin::pin!(runner.stream(requests));
//! while let Some(item) = items.next().await {
//!     println!("item {} finished: {}", item.index, item.result.is_ok());
//! }
//! # }
//! ```
//!
//! Lanes in this process, built in code (or read with `laneway_config::Config::load`). Here
//! the lane's upstream is Laneway's mock, started on a free port (`laneway mock` does the same
//! from a shell; lanes of `kind = "mock"` are started only by the `laneway` binary):
//!
//! ```
//! use laneway_batch::{Concurrency, ConfigBuilder, KeyBuilder, LaneBuilder, Request, Runner};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let mock = laneway_mock::MockServer::start(([127, 0, 0, 1], 0).into(), laneway_mock::MockConfig::new()).await.unwrap();
//! let upstream = mock.url(); // e.g. "http://127.0.0.1:8401/v1"
//! let config = ConfigBuilder::new()
//!     .lane(LaneBuilder::new("local", &upstream).concurrency(2))
//!     .route("mock-*", &["local"])
//!     .key(KeyBuilder::new("app", "sk-app").rpm(600))
//!     .build()
//!     .expect("a valid config");
//! let runner = Runner::with_lanes(config, Some("sk-app"))
//!     .await
//!     .unwrap()
//!     .concurrency(Concurrency::Fixed(8));
//! let requests = (0..10)
//!     .map(|i| Request::chat(json!({"model": "mock-1", "messages": [{"role": "user", "content": format!("{i}")}]})))
//!     .collect();
//! let report = runner.run(requests).await;
//! assert_eq!(report.failed, 0);
//! # }
//! ```
//!
//! # Layout
//! - [`item`]: requests, responses, errors (with the OpenAI code and status) and usage.
//! - [`runner`]: the [`Runner`], its options, [`Progress`] and the [`Report`].
//! - `gate`: the concurrency bound, fixed or adaptive.
//! - `send`: one request with retries that obey the upstream's hints.

mod aimd;
mod answer;
mod gate;
pub mod item;
pub mod runner;
mod send;

pub mod json;
pub use gate::Concurrency;
pub use item::{Error, Item, Request, Response, Usage};
pub use laneway_config::builder::{ConfigBuilder, KeyBuilder, LaneBuilder};
pub use laneway_core::wire::Endpoint;
/// Why [`Runner::try_new`] refused a base URL.
pub use laneway_upstream::UpstreamError;
pub use runner::{LazyLanes, Progress, Report, Runner};
