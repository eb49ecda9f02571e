//! An upstream's `GET /v1/models` answer, read as outside input: bounded in size, count and id
//! length, and never trusted to be well formed.

use serde::Deserialize;

/// Largest model list read from an upstream.
pub const MAX_LIST_BYTES: usize = 1 << 20;
/// Model ids kept from one upstream.
pub const MAX_MODELS: usize = 1000;
/// Longest model id kept.
pub const MAX_ID_LEN: usize = 200;

#[derive(Deserialize)]
struct List {
    data: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    id: serde_json::Value,
}

/// The ids of an OpenAI model list; whatever is malformed is left out.
pub fn parse_list(body: &[u8]) -> Vec<String> {
    let Ok(list) = serde_json::from_slice::<List>(body) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = list
        .data
        .into_iter()
        .filter_map(|e| e.id.as_str().map(str::to_owned))
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .take(MAX_MODELS)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_sane_ids() {
        let body = br#"{"object":"list","data":[{"id":"b"},{"id":"a"},{"id":7},{"id":"has space"},{"id":""},{"id":"a"}]}"#;
        assert_eq!(parse_list(body), ["a", "b"]);
        assert!(parse_list(b"not json").is_empty());
        assert!(parse_list(br#"{"data":{}}"#).is_empty());
        let many = format!(
            "{{\"data\":[{}]}}",
            (0..5000)
                .map(|i| format!("{{\"id\":\"m{i}\"}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(parse_list(many.as_bytes()).len(), MAX_MODELS);
    }
}
