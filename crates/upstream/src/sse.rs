//! Learning a response's token usage as it streams by.
//!
//! Token limits are reserved from an estimate and settled to the real `usage` when the response
//! ends. For JSON bodies the usage object sits near the end, so only a bounded tail is kept. For
//! Server-Sent Events each complete event is inspected; when Laneway itself asked the upstream
//! for a usage chunk (`stream_options.include_usage`) that the client did not want, that chunk is
//! removed before it reaches the client.
//!
//! Only complete events are forwarded: a chunk is passed on up to its last event boundary (the
//! same bytes, no copy, when nothing was held back) and the partial event after it waits for the
//! rest. So when a stream breaks, the client has whole events only and the gateway's error event
//! that follows is readable by any SSE parser. A partial event longer than [`MAX_EVENT`] is an
//! upstream fault, not something to buffer without bound.

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use serde::Deserialize;

/// Token usage as any of the APIs reports it: OpenAI's chat and completions
/// (`prompt_tokens` / `completion_tokens`), the Responses API and Anthropic's Messages
/// (`input_tokens` / `output_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: u64,
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    /// Usage reported in parts (Anthropic's `message_start` has the input, `message_delta` the
    /// output, each count cumulative): the larger of each.
    fn merge(self, later: Self) -> Self {
        Self {
            prompt_tokens: self.prompt_tokens.max(later.prompt_tokens),
            completion_tokens: self.completion_tokens.max(later.completion_tokens),
            total_tokens: self.total_tokens.max(later.total_tokens),
        }
    }

    pub fn total(&self) -> u64 {
        self.total_tokens
            .max(self.prompt_tokens + self.completion_tokens)
    }
}

/// How much of a JSON body's end is kept to find its usage.
const JSON_TAIL: usize = 8 * 1024;

/// The longest event held back while waiting for its end.
pub const MAX_EVENT: usize = 1 << 20;

/// An upstream event grew past [`MAX_EVENT`] without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the upstream sent an event longer than {} KiB", MAX_EVENT >> 10)]
pub struct EventTooLong;

#[derive(Debug)]
enum Mode {
    Json,
    Sse { strip_usage: bool },
}

#[derive(Debug)]
pub struct UsageTap {
    mode: Mode,
    buf: BytesMut,
    /// JSON bodies: the latest chunk, held as it is; `buf` then copies only the tail of the
    /// chunks before it, so a body that arrives in one chunk is never copied.
    last: Option<Bytes>,
    usage: Option<Usage>,
    /// Responses API answers: look for the response's id (`"id":"resp_…"`) as it goes by.
    want_id: bool,
    response_id: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    usage: Option<Usage>,
    choices: Option<Vec<serde::de::IgnoredAny>>,
    /// The Responses API's `response.completed` carries usage in its response.
    response: Option<Nested>,
    /// Anthropic's `message_start` carries it in its message.
    message: Option<Nested>,
}

#[derive(Deserialize)]
struct Nested {
    usage: Option<Usage>,
}

impl UsageTap {
    pub fn json() -> Self {
        Self {
            mode: Mode::Json,
            buf: BytesMut::new(),
            last: None,
            usage: None,
            want_id: false,
            response_id: None,
        }
    }

    pub fn sse(strip_usage: bool) -> Self {
        Self {
            mode: Mode::Sse { strip_usage },
            buf: BytesMut::new(),
            last: None,
            usage: None,
            want_id: false,
            response_id: None,
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Also notes the Responses API id the answer carries (its first `"id":"resp_…"`, in the
    /// JSON body or the `response.created` event).
    pub fn capture_response_id(mut self) -> Self {
        self.want_id = true;
        self
    }

    /// The response id noted, once.
    pub fn take_response_id(&mut self) -> Option<String> {
        self.response_id.take()
    }

    /// Takes a chunk from the upstream; returns what to send to the client now.
    pub fn feed(&mut self, chunk: Bytes) -> Result<Option<Bytes>, EventTooLong> {
        if self.want_id && self.response_id.is_none() {
            self.response_id = find_response_id(&chunk);
        }
        let strip_usage = match self.mode {
            Mode::Json => {
                if let Some(prev) = self.last.replace(chunk.clone()) {
                    let tail = json_tail(&prev);
                    if tail.len() < prev.len() {
                        // What `buf` held no longer joins on to what follows.
                        self.buf.clear();
                    }
                    self.buf.extend_from_slice(tail);
                    if self.buf.len() > 2 * JSON_TAIL {
                        let cut = self.buf.len() - JSON_TAIL;
                        let _ = self.buf.split_to(cut);
                    }
                }
                return Ok(Some(chunk));
            }
            Mode::Sse { strip_usage } => strip_usage,
        };
        let ready = self.complete_events(chunk);
        if self.buf.len() > MAX_EVENT {
            return Err(EventTooLong);
        }
        if ready.is_empty() {
            return Ok(None);
        }
        if !strip_usage {
            self.inspect(&ready);
            return Ok(Some(ready));
        }
        // Keep every event but usage-only ones; a copy is made only from the first removal on.
        let mut kept: Option<BytesMut> = None;
        let mut at = 0;
        while let Some(end) = find_event_end(&ready[at..]) {
            let ev = &ready[at..at + end];
            if self.inspect(ev) {
                kept.get_or_insert_with(|| BytesMut::from(&ready[..at]));
            } else if let Some(k) = &mut kept {
                k.extend_from_slice(ev);
            }
            at += end;
        }
        Ok(match kept {
            None => Some(ready),
            Some(k) => (!k.is_empty()).then(|| k.freeze()),
        })
    }

    /// Adds a chunk and splits off every complete event: the chunk itself (a slice, no copy)
    /// when nothing was held back before it.
    fn complete_events(&mut self, chunk: Bytes) -> Bytes {
        if self.buf.is_empty() {
            let end = find_last_event_end(&chunk).unwrap_or(0);
            self.buf.extend_from_slice(&chunk[end..]);
            return chunk.slice(..end);
        }
        // The held bytes contain no boundary; one may straddle them and the new chunk.
        let from = self.buf.len().saturating_sub(3);
        self.buf.extend_from_slice(&chunk);
        match find_last_event_end(&self.buf[from..]) {
            Some(end) => self.buf.split_to(from + end).freeze(),
            None => Bytes::new(),
        }
    }

    /// Whether the body ending now would cut an event in half: bytes are held back that are
    /// not a whole event missing only its blank line (a `data:` line of JSON or `[DONE]`). The
    /// relay then ends the stream with an error event instead of passing the half on.
    pub fn ends_mid_event(&self) -> bool {
        matches!(self.mode, Mode::Sse { .. })
            && !self.buf.is_empty()
            && !Self::whole_event(&self.buf)
    }

    /// The body ended: returns anything still held back, and settles the usage of JSON bodies.
    pub fn finish(&mut self) -> Option<Bytes> {
        match self.mode {
            Mode::Json => {
                let last = self.last.take().unwrap_or_default();
                let tail = json_tail(&last);
                self.usage = if self.buf.is_empty() || tail.len() < last.len() {
                    find_json_usage(tail)
                } else {
                    self.buf.extend_from_slice(tail);
                    find_json_usage(&self.buf)
                };
                self.buf.clear();
                None
            }
            Mode::Sse { .. } => {
                // An unterminated last event (`data: [DONE]` without its blank line) is passed on
                // with the blank line that ends it, so the client's parser dispatches it.
                let mut rest = std::mem::take(&mut self.buf);
                if rest.is_empty() || self.inspect(&rest) {
                    return None;
                }
                while rest.last() == Some(&b'\n') || rest.last() == Some(&b'\r') {
                    rest.truncate(rest.len() - 1);
                }
                rest.extend_from_slice(b"\n\n");
                Some(rest.freeze())
            }
        }
    }

    /// Whether `ev` is an event the upstream finished but did not terminate: every `data:` line
    /// holds `[DONE]` or a complete JSON value, and there is at least one.
    fn whole_event(ev: &[u8]) -> bool {
        let mut data = ev
            .split(|&b| b == b'\n')
            .filter_map(|l| l.strip_prefix(b"data:"))
            .map(<[u8]>::trim_ascii)
            .peekable();
        data.peek().is_some()
            && data.all(|d| {
                d == b"[DONE]" || serde_json::from_slice::<serde::de::IgnoredAny>(d).is_ok()
            })
    }

    /// Records usage found in an event; true when the event is a usage-only chunk to remove.
    fn inspect(&mut self, ev: &[u8]) -> bool {
        let mut strip = false;
        for line in ev.split(|&b| b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.trim_ascii();
            if !data.starts_with(b"{") || !contains(data, b"\"usage\"") {
                continue;
            }
            if let Ok(e) = serde_json::from_slice::<Event>(data) {
                let nested = e
                    .response
                    .and_then(|n| n.usage)
                    .or(e.message.and_then(|n| n.usage));
                if let Some(u) = nested {
                    self.usage = Some(self.usage.map_or(u, |old| old.merge(u)));
                }
                if let Some(u) = e.usage {
                    self.usage = Some(self.usage.map_or(u, |old| old.merge(u)));
                    strip = matches!(self.mode, Mode::Sse { strip_usage: true })
                        && e.choices.is_none_or(|c| c.is_empty());
                }
            }
        }
        strip
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memmem::find(hay, needle).is_some()
}

/// The end of the last complete event (just past its blank line).
fn find_last_event_end(buf: &[u8]) -> Option<usize> {
    let lf = memmem::rfind(buf, b"\n\n").map(|p| p + 2);
    let crlf = memmem::rfind(buf, b"\r\n\r\n").map(|p| p + 4);
    lf.max(crlf)
}

/// The end of the first complete event (just past its blank line).
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = memmem::find(buf, b"\n\n").map(|p| p + 2);
    let crlf = memmem::find(buf, b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The end of a JSON body chunk, where its usage is looked for.
fn json_tail(chunk: &[u8]) -> &[u8] {
    &chunk[chunk.len().saturating_sub(2 * JSON_TAIL)..]
}

/// The last `"usage": {...}` object in a JSON document's tail.
/// The first `"id": "resp_…"` in `chunk`: a response id is short and of plain characters, so
/// anything else is not one.
fn find_response_id(chunk: &[u8]) -> Option<String> {
    let finder = memmem::Finder::new(b"\"resp_");
    for at in finder.find_iter(chunk) {
        let before = chunk[..at].trim_ascii_end();
        let Some(before) = before.strip_suffix(b":") else {
            continue;
        };
        if !before.trim_ascii_end().ends_with(b"\"id\"") {
            continue;
        }
        let rest = &chunk[at + 1..];
        let end = rest.iter().position(|&b| b == b'"')?;
        let id = &rest[..end];
        if id.len() <= 256
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        {
            return std::str::from_utf8(id).ok().map(str::to_owned);
        }
    }
    None
}

fn find_json_usage(tail: &[u8]) -> Option<Usage> {
    let key = b"\"usage\"";
    // Forward searches are the vectorised ones; a body holds the key once or a few times.
    let finder = memmem::Finder::new(key);
    let mut at = finder.find(tail)?;
    while let Some(next) = finder.find(&tail[at + key.len()..]) {
        at += key.len() + next;
    }
    let rest = tail[at + key.len()..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?;
    // From text, serde_json skips its check of every key; the tail of a UTF-8 body after an
    // ASCII key is UTF-8 too.
    let usage = match std::str::from_utf8(rest) {
        Ok(text) => serde_json::Deserializer::from_str(text)
            .into_iter::<Usage>()
            .next(),
        Err(_) => serde_json::Deserializer::from_slice(rest)
            .into_iter::<Usage>()
            .next(),
    };
    usage?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n\
data: [DONE]\n\n";

    fn run(tap: &mut UsageTap, pieces: usize) -> String {
        let bytes = STREAM.as_bytes();
        let step = bytes.len().div_ceil(pieces);
        let mut out = Vec::new();
        for chunk in bytes.chunks(step) {
            if let Some(b) = tap.feed(Bytes::copy_from_slice(chunk)).unwrap() {
                out.extend_from_slice(&b);
            }
        }
        if let Some(b) = tap.finish() {
            out.extend_from_slice(&b);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn passes_through_and_reads_usage_at_any_split() {
        for pieces in 1..40 {
            let mut tap = UsageTap::sse(false);
            assert_eq!(run(&mut tap, pieces), STREAM);
            assert_eq!(tap.usage().unwrap().total(), 5);
        }
    }

    #[test]
    fn strips_the_usage_chunk_at_any_split() {
        for pieces in 1..40 {
            let mut tap = UsageTap::sse(true);
            let out = run(&mut tap, pieces);
            assert!(!out.contains("usage"), "{out}");
            assert!(out.ends_with("data: [DONE]\n\n"));
            assert_eq!(out.matches("data:").count(), 3);
            assert_eq!(tap.usage().unwrap().prompt_tokens, 3);
        }
    }

    #[test]
    fn a_stream_closed_mid_event_is_told_from_one_missing_its_blank_line() {
        let mut half = UsageTap::sse(false);
        let out = half
            .feed(Bytes::from_static(
                b"data: {\"a\":1}\n\ndata: {\"id\":\"x\",\"cho",
            ))
            .unwrap();
        assert_eq!(out.as_deref(), Some(&b"data: {\"a\":1}\n\n"[..]));
        assert!(half.ends_mid_event());

        let mut unterminated = UsageTap::sse(false);
        unterminated
            .feed(Bytes::from_static(b"data: {\"a\":1}\n\ndata: [DONE]\n"))
            .unwrap();
        assert!(!unterminated.ends_mid_event());
        assert_eq!(
            unterminated.finish().as_deref(),
            Some(&b"data: [DONE]\n\n"[..])
        );
        let mut comment_only = UsageTap::sse(false);
        comment_only
            .feed(Bytes::from_static(b": keep-alive"))
            .unwrap();
        assert!(comment_only.ends_mid_event(), "no data line: not an event");
        assert!(!UsageTap::json().ends_mid_event());
    }

    #[test]
    fn usage_of_the_responses_and_messages_apis_is_read() {
        let mut responses = UsageTap::sse(false);
        responses.feed(Bytes::from_static(
            b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n\
              event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\
              \"usage\":{\"input_tokens\":7,\"output_tokens\":5,\"total_tokens\":12,\"output_tokens_details\":{}}}}\n\n",
        )).unwrap();
        assert_eq!(responses.usage().unwrap().total(), 12);
        let mut messages = UsageTap::sse(false);
        messages.feed(Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n\
              event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":16}}\n\n",
        )).unwrap();
        let u = messages.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (9, 16));
        let mut json = UsageTap::json();
        json.feed(Bytes::from_static(
            b"{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}",
        ))
        .unwrap();
        json.finish();
        assert_eq!(json.usage().unwrap().total(), 7);
    }

    #[test]
    fn a_response_id_is_noted_from_json_or_the_created_event() {
        let mut json = UsageTap::json().capture_response_id();
        json.feed(Bytes::from_static(
            b"{\"id\": \"resp_abc123\", \"previous_response_id\": \"resp_old\"}",
        ))
        .unwrap();
        assert_eq!(json.take_response_id().as_deref(), Some("resp_abc123"));
        let mut sse = UsageTap::sse(false).capture_response_id();
        sse.feed(Bytes::from_static(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_9\"}}\n\n")).unwrap();
        assert_eq!(sse.take_response_id().as_deref(), Some("resp_9"));
        let mut not_one = UsageTap::json().capture_response_id();
        not_one
            .feed(Bytes::from_static(
                b"{\"text\":\"resp_x\",\"id\":\"resp_bad id\"}",
            ))
            .unwrap();
        assert_eq!(not_one.take_response_id(), None);
        let mut off = UsageTap::json();
        off.feed(Bytes::from_static(b"{\"id\":\"resp_1\"}"))
            .unwrap();
        assert_eq!(off.take_response_id(), None);
    }

    #[test]
    fn json_usage_from_the_tail() {
        let filler = "x".repeat(50_000);
        let body = format!("{{\"choices\":[{{\"text\":\"{filler}\"}}],\"usage\": {{\"prompt_tokens\":7,\"completion_tokens\":1,\"total_tokens\":8}}}}");
        // One chunk, the usage cut anywhere between chunks, and last chunks both smaller and
        // larger than the tail that is searched.
        for size in [1, 7, 1000, 9000, 16_384, 20_000, 50_030, body.len()] {
            let mut tap = UsageTap::json();
            for chunk in body.as_bytes().chunks(size) {
                let out = tap.feed(Bytes::copy_from_slice(chunk)).unwrap();
                assert_eq!(out.as_deref(), Some(chunk), "passed on as it came");
            }
            assert_eq!(tap.finish(), None);
            assert_eq!(tap.usage().map(|u| u.total()), Some(8), "chunks of {size}");
        }
        let mut tap = UsageTap::json();
        tap.feed(Bytes::from_static(b"{\"choices\":[]}")).unwrap();
        tap.finish();
        assert_eq!(tap.usage(), None);
    }

    #[test]
    fn the_last_usage_key_counts() {
        let body = br#"{"meta":{"usage":{"total_tokens":99}},"usage":{"prompt_tokens":2,"prompt_tokens_details":{"cached_tokens":1},"completion_tokens":3,"total_tokens":5}}"#;
        let u = find_json_usage(body).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total()), (2, 3, 5));
        // Bytes that are not UTF-8 after the key are read as bytes.
        let odd = b"{\"usage\":{\"total_tokens\":4},\"x\":\"\xff\"}";
        assert_eq!(find_json_usage(odd).map(|u| u.total()), Some(4));
        assert_eq!(find_json_usage(b"{\"usage\":"), None);
        assert_eq!(find_json_usage(b"{\"usage\" 3}"), None);
        assert_eq!(find_json_usage(b"\"usage\""), None);
    }

    #[test]
    fn a_partial_event_is_held_not_forwarded() {
        let mut tap = UsageTap::sse(false);
        let first = tap
            .feed(Bytes::from_static(
                b"data: {\"id\":\"c1\"}\n\ndata: {\"id\":\"c1\",\"object\":\"chat.comp",
            ))
            .unwrap()
            .unwrap();
        assert_eq!(&first[..], b"data: {\"id\":\"c1\"}\n\n");
        assert_eq!(tap.feed(Bytes::from_static(b"letion\"}")).unwrap(), None);
        let rest = tap.feed(Bytes::from_static(b"\n\n")).unwrap().unwrap();
        assert_eq!(
            &rest[..],
            b"data: {\"id\":\"c1\",\"object\":\"chat.completion\"}\n\n"
        );
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut tap = UsageTap::sse(false);
        let big = Bytes::from(vec![b'x'; MAX_EVENT + 1]);
        assert_eq!(tap.feed(big), Err(EventTooLong));
    }

    /// Every event of `text` is whole and its data is JSON or `[DONE]`.
    fn well_formed(text: &str) -> Result<(), String> {
        if text.is_empty() {
            return Ok(());
        }
        if !text.ends_with("\n\n") {
            return Err(format!("does not end on an event boundary: {text:?}"));
        }
        for ev in text.split("\n\n").filter(|e| !e.is_empty()) {
            for line in ev.lines() {
                let data = line
                    .strip_prefix("data: ")
                    .ok_or(format!("bad line {line:?}"))?;
                if data != "[DONE]" && serde_json::from_str::<serde_json::Value>(data).is_err() {
                    return Err(format!("not JSON: {data:?}"));
                }
            }
        }
        Ok(())
    }

    proptest::proptest! {
        /// Split anywhere and cut anywhere: the client sees whole events, then the error event.
        #[test]
        fn relay_output_is_always_valid_sse(
            strip in proptest::bool::ANY,
            cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12),
            stop in 0usize..=STREAM.len(),
        ) {
            let mut points: Vec<usize> = cuts.into_iter().filter(|&c| c < stop).collect();
            points.push(0);
            points.push(stop);
            points.sort_unstable();
            points.dedup();
            let bytes = STREAM.as_bytes();
            let mut tap = UsageTap::sse(strip);
            let mut out = Vec::new();
            for w in points.windows(2) {
                if let Some(b) = tap.feed(Bytes::copy_from_slice(&bytes[w[0]..w[1]])).unwrap() {
                    out.extend_from_slice(&b);
                }
            }
            if stop == bytes.len() {
                if let Some(b) = tap.finish() {
                    out.extend_from_slice(&b);
                }
                if !strip {
                    proptest::prop_assert_eq!(&out[..], bytes);
                }
            } else {
                // The stream broke: the relay appends its error event after what it sent.
                out.extend_from_slice(b"data: {\"error\":{\"message\":\"cut\"}}\n\n");
            }
            let text = String::from_utf8(out).unwrap();
            proptest::prop_assert!(well_formed(&text).is_ok(), "{:?}", well_formed(&text));
        }
    }
}
