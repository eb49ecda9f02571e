//! OpenAI's Responses API as the mock serves it: whole answers, the streamed event sequence
//! (`response.created` … `response.completed`, named SSE events), and the ids it made, kept so
//! that `GET /v1/responses/{id}`, `previous_response_id` and the other calls on an id work, and
//! fail with 404 where a real account would (an id this mock never made).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::wire::now;

/// Responses remembered at most; the oldest are forgotten first.
const KEPT: usize = 10_000;

/// What the mock made: each response and its input items, by id.
#[derive(Default)]
pub struct Store {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_id: HashMap<String, (Value, Value)>,
    order: VecDeque<String>,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn keep(&self, response: &Value, input_items: Value) {
        let Some(id) = response["id"].as_str() else {
            return;
        };
        let mut k = self.lock();
        if k.order.len() >= KEPT {
            if let Some(old) = k.order.pop_front() {
                k.by_id.remove(&old);
            }
        }
        k.order.push_back(id.to_owned());
        k.by_id
            .insert(id.to_owned(), (response.clone(), input_items));
    }

    pub fn knows(&self, id: &str) -> bool {
        self.lock().by_id.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<Value> {
        self.lock().by_id.get(id).map(|(r, _)| r.clone())
    }

    pub fn input_items(&self, id: &str) -> Option<Value> {
        self.lock().by_id.get(id).map(|(_, i)| i.clone())
    }

    pub fn delete(&self, id: &str) -> bool {
        let mut k = self.lock();
        let found = k.by_id.remove(id).is_some();
        if found {
            k.order.retain(|o| o != id);
        }
        found
    }
}

/// The request's input as the list of input items the API reports back.
pub fn input_items(input: Option<&Value>, id: u64) -> Value {
    let items: Vec<Value> = match input {
        Some(Value::String(text)) => vec![json!({
            "type": "message", "id": format!("msg_{id:024x}"), "role": "user",
            "content": [{"type": "input_text", "text": text}],
        })],
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    let first = items
        .first()
        .and_then(|i| i["id"].as_str())
        .map(str::to_owned);
    let last = items
        .last()
        .and_then(|i| i["id"].as_str())
        .map(str::to_owned);
    json!({"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": false})
}

/// What one answer says.
pub struct Answer<'a> {
    pub id: u64,
    pub model: &'a str,
    pub text: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub max_output_tokens: Option<u64>,
    pub previous: Option<&'a str>,
    /// The output was cut by `max_output_tokens`.
    pub cut: bool,
}

impl Answer<'_> {
    fn message_id(&self) -> String {
        format!("msg_{:024x}", self.id.rotate_left(17))
    }

    fn message(&self, done: bool) -> Value {
        let content = if done {
            json!([{"type": "output_text", "text": self.text, "annotations": []}])
        } else {
            json!([])
        };
        json!({
            "type": "message", "id": self.message_id(), "role": "assistant",
            "status": if done { "completed" } else { "in_progress" }, "content": content,
        })
    }

    /// The response object; `done` false is the one `response.created` carries.
    pub fn response(&self, done: bool) -> Value {
        let status = match (done, self.cut) {
            (false, _) => "in_progress",
            (true, true) => "incomplete",
            (true, false) => "completed",
        };
        let usage = done.then(|| {
            json!({
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            })
        });
        json!({
            "id": format!("resp_{:024x}", self.id),
            "object": "response",
            "created_at": now(),
            "status": status,
            "error": null,
            "incomplete_details": (done && self.cut).then(|| json!({"reason": "max_output_tokens"})),
            "instructions": null,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": if done { json!([self.message(true)]) } else { json!([]) },
            "parallel_tool_calls": true,
            "previous_response_id": self.previous,
            "reasoning": {"effort": null, "summary": null},
            "store": true,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {},
        })
    }

    /// The streamed events, in order, each a named SSE event with its `sequence_number`;
    /// `pieces` are the text deltas.
    pub fn events(&self, pieces: &[&str]) -> Vec<Bytes> {
        let item_id = self.message_id();
        let mut out: Vec<(&str, Value)> = vec![
            (
                "response.created",
                json!({"response": self.response(false)}),
            ),
            (
                "response.in_progress",
                json!({"response": self.response(false)}),
            ),
            (
                "response.output_item.added",
                json!({"output_index": 0, "item": self.message(false)}),
            ),
            (
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            ),
        ];
        for p in pieces {
            out.push((
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": p}),
            ));
        }
        out.push((
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": self.text}),
        ));
        out.push((
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": self.text, "annotations": []}}),
        ));
        out.push((
            "response.output_item.done",
            json!({"output_index": 0, "item": self.message(true)}),
        ));
        let last = if self.cut {
            "response.incomplete"
        } else {
            "response.completed"
        };
        out.push((last, json!({"response": self.response(true)})));
        out.into_iter()
            .enumerate()
            .map(|(seq, (name, mut data))| {
                data["type"] = json!(name);
                data["sequence_number"] = json!(seq);
                Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
            })
            .collect()
    }
}
