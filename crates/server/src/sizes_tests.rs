//! What a request waiting in a queue holds, bounded.
use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use laneway_core::wire::Endpoint;
use laneway_engine::auth::RequestCtx;
use laneway_engine::ledger::Ledger;
use laneway_engine::relay::relay;
use laneway_engine::route::routed;

use crate::proxy::handle;
use crate::App;
use tokio::time::Instant;

/// A request waiting in a queue is its handler's suspended future: what it holds is
/// measured here part by part (`docs/BENCHMARKS.md`, "What waiting costs"), and bounded, so
/// a change that puts a large state back into it (an attempt inline, a second timer) fails
/// here instead of showing up only in the memory benchmark.
#[tokio::test]
async fn a_waiting_request_s_future_stays_small() {
    let config = laneway_config::Config::parse(
        "[[lane]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/v1\"\n[[route]]\nmodel = \"*\"\nlanes = [\"a\"]\n",
    )
    .unwrap();
    let app = App::new(config, None, None).await.unwrap();
    let handler = handle(
        app.clone(),
        Endpoint::ChatCompletions,
        Request::new(Body::empty()),
    );
    let whole = crate::server::serve_direct(
        app.clone(),
        Endpoint::ChatCompletions,
        Request::new(Body::empty()),
    );
    let topo = app.topo.load_full();
    let key = topo.key(None).cloned().unwrap();
    let ctx = RequestCtx::new(None);
    let mut ledger = Ledger::new(app.engine().clone(), &ctx, false);
    let body = Bytes::from_static(b"{\"model\":\"m\",\"messages\":[]}");
    let options = (std::time::Duration::from_secs(1), 0);
    let endpoint = Endpoint::ChatCompletions;
    let p = routed(
        app.engine(),
        &topo,
        endpoint,
        body,
        &key,
        &mut ledger,
        options,
    )
    .unwrap();
    let relayed = relay(app.engine(), &topo, &key, p, &mut ledger);
    let cancel = tokio_util::sync::CancellationToken::new();
    let ask = laneway_admission::Ask {
        key: &key.key,
        priority: 0,
        tokens: 10,
        deadline: Instant::now(),
        cancel: &cancel,
        tag: 0,
    };
    let admitted = laneway_admission::acquire(&topo.routes[0].pool, ask);
    let sizes = [
        (
            "the handler with its middleware",
            std::mem::size_of_val(&whole),
            3584,
        ),
        ("the handler", std::mem::size_of_val(&handler), 4096),
        ("admission to answer", std::mem::size_of_val(&relayed), 3072),
        ("admission", std::mem::size_of_val(&admitted), 1536),
    ];
    for (what, size, bound) in sizes {
        eprintln!("{what}: {size} bytes");
        assert!(
            size <= bound,
            "{what}'s future is {size} bytes, over {bound}"
        );
    }
}
