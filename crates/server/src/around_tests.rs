use super::*;
use axum::body::Body;
use std::sync::atomic::{AtomicBool, Ordering};

fn plain(status: u16, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
    r
}

async fn app() -> Arc<App> {
    let config = laneway_config::Config::parse(
        "[[lane]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/v1\"\n[[route]]\nmodel = \"*\"\nlanes = [\"a\"]\n",
    )
    .unwrap();
    App::new(config, None, None).await.unwrap()
}

async fn body_of(resp: Response) -> serde_json::Value {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn framework_rejections_become_openai_errors() {
    let resp = around(app().await, Request::new(Body::empty()), |_| async {
        plain(400, "Failed to deserialize query string")
    })
    .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().contains_key("x-laneway-request-id"));
    let v = body_of(resp).await;
    assert_eq!(v["error"]["code"], "invalid_request");
    assert_eq!(v["error"]["message"], "Failed to deserialize query string");
}

#[tokio::test]
async fn upstream_answers_pass_untouched() {
    let resp = around(app().await, Request::new(Body::empty()), |_| async {
        let mut r = plain(400, "upstream says no");
        r.extensions_mut().insert(UpstreamAnswer);
        r
    })
    .await;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"upstream says no");
}

#[tokio::test]
async fn the_client_s_request_id_is_echoed_beside_laneway_s_own() {
    let mut req = Request::new(Body::empty());
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("client-7"));
    let resp = around(app().await, req, |req| async move {
        let ctx = req.extensions().get::<RequestCtx>().cloned();
        assert!(ctx.is_some(), "the handler sees the request's ids");
        plain(200, "fine")
    })
    .await;
    assert_eq!(resp.headers()["x-request-id"], "client-7");
    let own = resp.headers()["x-laneway-request-id"].to_str().unwrap();
    assert!(!own.is_empty() && own != "client-7");
}

struct SeesPanic(Arc<AtomicBool>);
impl Drop for SeesPanic {
    fn drop(&mut self) {
        self.0.store(std::thread::panicking(), Ordering::Release);
    }
}

#[tokio::test]
async fn a_panicking_handler_drops_its_state_while_unwinding_and_answers_500() {
    let seen = Arc::new(AtomicBool::new(false));
    let guard = SeesPanic(seen.clone());
    let resp = around(app().await, Request::new(Body::empty()), |_| async move {
        let _guard = guard;
        tokio::task::yield_now().await;
        panic!("handler bug");
    })
    .await;
    assert!(
        seen.load(Ordering::Acquire),
        "the state knew it was a panic"
    );
    assert_eq!(resp.status(), 500);
    assert_eq!(body_of(resp).await["error"]["code"], "internal_error");
}
