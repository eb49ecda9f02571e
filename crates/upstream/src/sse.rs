//! Learning a response's token usage as it streams by.
//!
//! Token limits are reserved from an estimate and settled to the real `usage` when the response
//! ends. For JSON bodies the usage object sits near the end, so only a bounded tail is kept. For
//! Server-Sent Events each complete event is inspected; when Laneway itself asked the upstream
//! for a usage chunk (`stream_options.include_usage`) that the client did not want, that chunk is
//! removed before it reaches the client. Chunks are forwarded as soon as they arrive unless
//! stripping is on, in which case only complete events are forwarded (a client cannot use half an
//! event anyway).

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.total_tokens
            .max(self.prompt_tokens + self.completion_tokens)
    }
}

/// How much of a JSON body's end is kept to find its usage.
const JSON_TAIL: usize = 8 * 1024;

#[derive(Debug)]
enum Mode {
    Json,
    Sse { strip_usage: bool },
}

#[derive(Debug)]
pub struct UsageTap {
    mode: Mode,
    buf: BytesMut,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Event {
    usage: Option<Usage>,
    choices: Option<Vec<serde::de::IgnoredAny>>,
}

impl UsageTap {
    pub fn json() -> Self {
        Self {
            mode: Mode::Json,
            buf: BytesMut::new(),
            usage: None,
        }
    }

    pub fn sse(strip_usage: bool) -> Self {
        Self {
            mode: Mode::Sse { strip_usage },
            buf: BytesMut::new(),
            usage: None,
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Takes a chunk from the upstream; returns what to send to the client now.
    pub fn feed(&mut self, chunk: Bytes) -> Option<Bytes> {
        match self.mode {
            Mode::Json => {
                self.buf.extend_from_slice(&chunk);
                if self.buf.len() > 2 * JSON_TAIL {
                    let cut = self.buf.len() - JSON_TAIL;
                    let _ = self.buf.split_to(cut);
                }
                Some(chunk)
            }
            Mode::Sse { strip_usage: false } => {
                self.buf.extend_from_slice(&chunk);
                while let Some(ev) = self.next_event() {
                    self.inspect(&ev);
                }
                Some(chunk)
            }
            Mode::Sse { strip_usage: true } => {
                self.buf.extend_from_slice(&chunk);
                let mut out: Option<BytesMut> = None;
                while let Some(ev) = self.next_event() {
                    if self.inspect(&ev) {
                        continue;
                    }
                    match &mut out {
                        None => out = Some(ev),
                        Some(o) => o.unsplit(ev),
                    }
                }
                out.map(BytesMut::freeze)
            }
        }
    }

    /// The body ended: returns anything still held back, and settles the usage of JSON bodies.
    pub fn finish(&mut self) -> Option<Bytes> {
        match self.mode {
            Mode::Json => {
                self.usage = find_json_usage(&self.buf);
                self.buf.clear();
                None
            }
            Mode::Sse { strip_usage } => {
                let rest = std::mem::take(&mut self.buf);
                (strip_usage && !rest.is_empty()).then(|| rest.freeze())
            }
        }
    }

    /// Splits the next complete event (up to and including its blank line) off the buffer.
    fn next_event(&mut self) -> Option<BytesMut> {
        let end = find_event_end(&self.buf)?;
        Some(self.buf.split_to(end))
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
                if let Some(u) = e.usage {
                    self.usage = Some(u);
                    strip = matches!(self.mode, Mode::Sse { strip_usage: true })
                        && e.choices.is_none_or(|c| c.is_empty());
                }
            }
        }
        strip
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The last `"usage": {...}` object in a JSON document's tail.
fn find_json_usage(tail: &[u8]) -> Option<Usage> {
    let key = b"\"usage\"";
    let at = tail.windows(key.len()).rposition(|w| w == key)?;
    let rest = tail[at + key.len()..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?;
    let mut de = serde_json::Deserializer::from_slice(rest).into_iter::<Usage>();
    de.next()?.ok()
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
            if let Some(b) = tap.feed(Bytes::copy_from_slice(chunk)) {
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
    fn json_usage_from_the_tail() {
        let mut tap = UsageTap::json();
        let filler = "x".repeat(50_000);
        let body = format!("{{\"choices\":[{{\"text\":\"{filler}\"}}],\"usage\": {{\"prompt_tokens\":7,\"completion_tokens\":1,\"total_tokens\":8}}}}");
        for chunk in body.as_bytes().chunks(1000) {
            tap.feed(Bytes::copy_from_slice(chunk));
        }
        tap.finish();
        assert_eq!(tap.usage().unwrap().total(), 8);
    }
}
