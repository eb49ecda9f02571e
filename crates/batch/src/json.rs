//! Requests and items as JSON text: the form they cross into the Python and Node packages in,
//! one format for both. A request is an OpenAI (or Anthropic) request body with an optional
//! `"url"` naming its endpoint; an item is `{"index","response","chunks","usage","error"}`.

use crate::{Endpoint, Item, Request};
use serde_json::{json, Value};

/// A JSON list of request bodies; an optional `"url"` picks the endpoint and is not sent.
pub fn parse_requests(text: &str) -> Result<Vec<Request>, String> {
    let list: Vec<Value> =
        serde_json::from_str(text).map_err(|e| format!("requests must be a list of dicts: {e}"))?;
    list.into_iter()
        .enumerate()
        .map(|(i, mut body)| {
            let Some(obj) = body.as_object_mut() else {
                return Err(format!("request {i} is not a dict"));
            };
            let url = match obj.remove("url") {
                None => "/v1/chat/completions".to_owned(),
                Some(Value::String(u)) => u,
                Some(other) => {
                    return Err(format!("request {i}: url must be a string, not {other}"))
                }
            };
            let Some(endpoint) = Endpoint::from_path(&url) else {
                let known: Vec<&str> = Endpoint::ALL.iter().map(|e| e.path()).collect();
                return Err(format!(
                    "request {i}: url {url:?} is not one of {}",
                    known.join(", ")
                ));
            };
            Ok(Request::new(endpoint, body))
        })
        .collect()
}

/// One item as a binding reads it. An answer's body goes across as the text that came, never
/// parsed on this side: the binding's own JSON parser builds its object once.
pub fn item_json(item: &Item) -> String {
    match &item.result {
        Ok(r) => {
            let usage = r.usage.map(|u| json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}));
            // Each part is a whole JSON value (the body was checked when it came), so joining
            // them gives a valid object.
            format!(
                "{{\"index\":{},\"response\":{},\"chunks\":{},\"usage\":{},\"error\":null}}",
                item.index,
                r.raw_body(),
                serde_json::to_string(&r.chunks).unwrap_or_else(|_| "[]".into()),
                usage.unwrap_or(Value::Null),
            )
        }
        Err(e) => json!({
            "index": item.index,
            "response": null,
            "error": {
                "status": e.status,
                "code": e.code,
                "message": e.message,
                "retry_after": e.retry_after.map(|d| d.as_secs_f64()),
                "request_id": e.request_id,
            },
        })
        .to_string(),
    }
}
