//! Laneway as a library: run many OpenAI-compatible requests from a program, with bounded or
//! adaptive concurrency, through a gateway, straight to a provider, or through Laneway's lanes in
//! this process. This is the API `laneway batch` is built on; it lives in `laneway-batch` and is
//! re-exported here, so adding `laneway` to `Cargo.toml` is enough.
//!
//! ```no_run
//! use laneway::{Concurrency, Request, Runner};
//! use serde_json::json;
//!
//! # async fn demo() -> std::io::Result<()> {
//! // Lanes in this process: their limits, queues and retries apply without a server.
//! let config = laneway_config::Config::load("laneway.toml".as_ref()).expect("a valid config");
//! let runner = Runner::with_lanes(config, Some("sk-team"))
//!     .await?
//!     .concurrency(Concurrency::Adaptive { max: 32 });
//! let requests: Vec<Request> = (0..10)
//!     .map(|i| Request::chat(json!({"model": "deepseek-chat",
//!         "messages": [{"role": "user", "content": format!("Image prompt number {i}")}]})))
//!     .collect();
//! let report = runner.run(requests).await;
//! println!("{} failed, {} tokens", report.failed, report.usage.total());
//! # Ok(())
//! # }
//! ```

pub use laneway_batch::*;
