//! Ten image prompts at once through Laneway's built-in demo lane (an in-process mock, no keys):
//! `cargo run -p laneway-batch --example parallel`.

use futures_util::StreamExt;
use laneway_batch::{Concurrency, Request, Runner};
use serde_json::json;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let runner = Runner::with_lanes(laneway_config::Config::demo(), None)
        .await?
        .concurrency(Concurrency::Fixed(4))
        .on_progress(|p| {
            eprintln!(
                "{}/{} done, {} in flight, {} queued",
                p.done, p.total, p.in_flight, p.queued
            )
        });
    let scenes = [
        "a lighthouse",
        "a fox",
        "a market",
        "a storm",
        "a library",
        "a bridge",
        "a garden",
        "a train",
        "a harbour",
        "a mountain hut",
    ];
    let requests: Vec<Request> = scenes
        .iter()
        .map(|s| {
            Request::chat(json!({
                "model": "mock-story",
                "messages": [{"role": "user", "content": format!("Write an image prompt for {s}")}],
            }))
        })
        .collect();
    // As they finish, with their place in the input.
    let mut items = Box::pin(runner.stream(requests));
    while let Some(item) = items.next().await {
        match item.result {
            Ok(r) => println!(
                "{:>2} {}: {}",
                item.index,
                scenes[item.index],
                r.body()["choices"][0]["message"]["content"]
            ),
            Err(e) => println!("{:>2} {}: failed: {e}", item.index, scenes[item.index]),
        }
    }
    Ok(())
}
