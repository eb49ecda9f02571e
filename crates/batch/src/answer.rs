//! Reading what an upstream answered: a plain JSON answer, a whole event stream, or an error.
//!
//! A plain answer is checked and its usage read in one pass that builds nothing: the body stays
//! the text that came, and becomes a tree only when the program asks for it
//! ([`Response::body`]). Anything the pass does not expect (a usage that is not plain counts, a
//! repeated key, a body that is not an object) takes the slow road, a full parse, so hostile
//! answers are judged exactly as valid JSON always was.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::item::{Error, Response, Usage};

/// The parts of an answer read on the way in; serde skips the rest without building it.
#[derive(Deserialize)]
struct Probe {
    usage: Option<ProbeUsage>,
}

#[derive(Deserialize)]
struct ProbeUsage {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
}

/// A plain (not streamed) successful answer: JSON, or an `invalid_response` error naming why not.
pub(crate) fn read_plain(bytes: Bytes, request_id: String) -> Result<Response, Error> {
    let invalid =
        |why: String| Error::new("invalid_response", format!("the answer is not JSON: {why}"));
    // The UTF-8 check is done once over the whole body, which is much cheaper than serde_json's
    // check of every string in it when given bytes.
    let text = std::str::from_utf8(&bytes).map_err(|e| invalid(format!("not UTF-8 ({e})")))?;
    let (usage, parsed) = match serde_json::from_str::<Probe>(text) {
        Ok(p) => {
            let usage = p.usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens.unwrap_or(0),
                completion_tokens: u.completion_tokens.unwrap_or(0),
            });
            (usage, None)
        }
        Err(_) => {
            let v: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
            (Usage::from_body(&v), Some(v))
        }
    };
    Ok(Response::new(bytes, parsed, Vec::new(), usage, request_id))
}

/// A whole event stream: its `data:` events as JSON, until `[DONE]`; an error event fails it.
pub(crate) fn read_stream(bytes: &[u8], request_id: String) -> Result<Response, Error> {
    let text = String::from_utf8_lossy(bytes);
    let mut chunks = Vec::new();
    let mut last = "null";
    let mut usage = None;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            Error::new(
                "invalid_response",
                format!("a stream event is not JSON: {e}"),
            )
        })?;
        if v.get("error").is_some() {
            return Err(upstream_error(200, data.as_bytes()));
        }
        if let Some(u) = Usage::from_body(&v) {
            usage = Some(u);
        }
        chunks.push(v);
        last = data;
    }
    let raw = Bytes::copy_from_slice(last.as_bytes());
    let body = chunks.last().cloned();
    Ok(Response::new(raw, body, chunks, usage, request_id))
}

/// The error an answer carries: OpenAI's envelope when there is one.
pub(crate) fn upstream_error(status: u16, bytes: &[u8]) -> Error {
    let v: Option<Value> = serde_json::from_slice(bytes).ok();
    let err = v.as_ref().and_then(|v| v.get("error"));
    let text = |k: &str| {
        err.and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Error {
        status: Some(status),
        code: text("code")
            .or_else(|| text("type"))
            .unwrap_or_else(|| format!("http_{status}")),
        message: text("message").unwrap_or_else(|| {
            // Not OpenAI's envelope: the start of what came, or that nothing came.
            let start = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]);
            let start = start.trim();
            if start.is_empty() {
                format!("the upstream answered {status} with no error message")
            } else {
                start.to_owned()
            }
        }),
        retry_after: None,
        body: v.clone().map(Box::new),
        request_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plain(text: &[u8]) -> Result<Response, Error> {
        read_plain(Bytes::copy_from_slice(text), "req".into())
    }

    #[test]
    fn an_error_without_openai_s_envelope_still_says_something() {
        let e = upstream_error(404, b"");
        assert_eq!(e.code, "http_404");
        assert_eq!(e.message, "the upstream answered 404 with no error message");
        let e = upstream_error(502, b"  <html>bad gateway</html>\n");
        assert_eq!(e.message, "<html>bad gateway</html>");
        let e = upstream_error(
            400,
            br#"{"error": {"message": "no", "type": "invalid_request_error"}}"#,
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("invalid_request_error", "no")
        );
    }

    #[test]
    fn answers_parse_only_as_utf8_json() {
        let r = plain("{\"a\":\"é\",\"b\":[1]}".as_bytes()).unwrap();
        assert_eq!(r.body()["a"], "é");
        assert_eq!(r.raw_body(), "{\"a\":\"é\",\"b\":[1]}");
        let bad_utf8 = plain(b"{\"a\":\"\xff\"}").unwrap_err().message;
        assert!(bad_utf8.contains("not UTF-8"), "{bad_utf8}");
        let not_json = plain(b"<html>").unwrap_err();
        assert_eq!(not_json.code, "invalid_response");
        assert!(not_json.message.contains("line 1"), "{}", not_json.message);
        for broken in [
            &b"{\"a\":1"[..],
            b"{\"a\":1} x",
            b"{\"a\":\"\x01\"}",
            b"{\"a\":01}",
        ] {
            assert!(
                plain(broken).is_err(),
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
    }

    #[test]
    fn the_one_pass_reads_usage_as_the_full_parse_does() {
        let cases = [
            json!({"id": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
            json!({"choices": [{"message": {"content": "{\"usage\": 1}"}}]}),
            json!({"usage": {"prompt_tokens": 3}}),
            json!({"usage": {"prompt_tokens": -3, "completion_tokens": 2.5}}),
            json!({"usage": {"prompt_tokens": "3", "completion_tokens": null}}),
            json!({"usage": "none"}),
            json!({"usage": null}),
            json!([1, 2, 3]),
            json!("text"),
            json!({"usage": {"prompt_tokens": u64::MAX, "completion_tokens": 1}}),
        ];
        for v in cases {
            let r = plain(v.to_string().as_bytes()).unwrap();
            assert_eq!(r.usage, Usage::from_body(&v), "{v}");
            assert_eq!(r.body(), &v);
        }
        // A repeated key: the last one counts, as in a tree.
        let r =
            plain(br#"{"usage": {"prompt_tokens": 1}, "usage": {"prompt_tokens": 2}}"#).unwrap();
        assert_eq!(r.usage.map(|u| u.prompt_tokens), Some(2));
        assert_eq!(r.body()["usage"]["prompt_tokens"], 2);
    }

    #[test]
    fn the_body_is_the_text_that_came_until_asked_for() {
        let text = r#"{"b": 1, "a": [true, null]}"#;
        let r = plain(text.as_bytes()).unwrap();
        assert_eq!(
            r.raw_body(),
            text,
            "kept as it came, key order and spacing included"
        );
        assert_eq!(r.clone().into_body(), json!({"a": [true, null], "b": 1}));
        assert_eq!(r.body()["a"][0], true);
    }

    #[test]
    fn a_stream_keeps_its_last_event_as_the_body() {
        let s = b"data: {\"choices\": [{\"delta\": {\"content\": \"hi\"}}]}\n\n\
                  data: {\"choices\": [], \"usage\": {\"prompt_tokens\": 2, \"completion_tokens\": 1}}\n\n\
                  data: [DONE]\n\n";
        let r = read_stream(s, "req".into()).unwrap();
        assert_eq!(r.chunks.len(), 2);
        assert_eq!(r.body(), &r.chunks[1]);
        assert_eq!(
            r.raw_body(),
            r#"{"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}"#
        );
        assert_eq!(r.usage.map(|u| u.total()), Some(3));
        let empty = read_stream(b"data: [DONE]\n\n", "req".into()).unwrap();
        assert_eq!((empty.body(), empty.raw_body()), (&Value::Null, "null"));
    }
}
