use super::*;
use proptest::prelude::*;

const CHAT: Endpoint = Endpoint::ChatCompletions;

#[test]
fn every_endpoint_stands_at_its_own_index() {
    for (i, e) in Endpoint::ALL.into_iter().enumerate() {
        assert_eq!(e as usize, i, "{e:?}");
    }
}

#[test]
fn reads_the_fields() {
    let body = br#"{"messages":[{"role":"user","content":"hi"}],"model":"mock-1","stream":true,"max_tokens":7,"stream_options":{"include_usage":true}}"#;
    let m = peek(CHAT, body).unwrap();
    assert_eq!(m.model, "mock-1");
    assert!(m.stream && m.include_usage);
    assert_eq!(m.max_tokens, Some(7));
    assert_eq!(&body[m.model_span.clone()], br#""mock-1""#);
}

#[test]
fn bad_bodies_name_the_problem() {
    assert!(matches!(peek(CHAT, b"{nope"), Err(PeekError::NotJson(_))));
    assert_eq!(peek(CHAT, b"[1]"), Err(PeekError::NotObject));
    assert_eq!(
        peek(CHAT, br#"{"messages":[]}"#),
        Err(PeekError::Missing("model"))
    );
    assert_eq!(
        peek(CHAT, br#"{"model":"m"}"#),
        Err(PeekError::Missing("messages"))
    );
    assert!(matches!(
        peek(CHAT, br#"{"model":5,"messages":[]}"#),
        Err(PeekError::WrongType { field: "model", .. })
    ));
    assert!(peek(Endpoint::Embeddings, br#"{"model":"e","input":"x"}"#).is_ok());
}

#[test]
fn a_field_of_the_wrong_type_is_named() {
    let wrong = |body: &str| match peek(CHAT, body.as_bytes()) {
        Err(e @ PeekError::WrongType { .. }) => (e.param(), e.to_string()),
        other => panic!("{body}: {other:?}"),
    };
    let base = r#""model":"m","messages":[]"#;
    for (extra, field, says) in [
        (
            r#""stream":"yes""#,
            "stream",
            "`stream` must be true or false",
        ),
        (
            r#""max_tokens":-5"#,
            "max_tokens",
            "`max_tokens` must be a non-negative integer",
        ),
        (r#""max_tokens":1.5"#, "max_tokens", "non-negative integer"),
        (
            r#""max_completion_tokens":"9""#,
            "max_completion_tokens",
            "non-negative integer",
        ),
        (
            r#""max_tokens":99999999999999999999999"#,
            "max_tokens",
            "non-negative integer",
        ),
        (
            r#""stream_options":true"#,
            "stream_options",
            "`stream_options` must be an object",
        ),
        (
            r#""stream_options":{"include_usage":1}"#,
            "stream_options.include_usage",
            "true or false",
        ),
    ] {
        let (param, message) = wrong(&format!("{{{base},{extra}}}"));
        assert_eq!(param, Some(field), "{extra}");
        assert!(message.contains(says), "{extra}: {message}");
    }
    // `null` is the same as leaving a field out, as OpenAI's API takes it.
    let m = peek(
        CHAT,
        br#"{"model":"m","messages":[],"stream":null,"max_tokens":null,"stream_options":null}"#,
    )
    .unwrap();
    assert!(!m.stream && !m.include_usage && m.max_tokens.is_none());
    assert!(matches!(
        peek(CHAT, br#"{"model":"m","model":"n","messages":[]}"#),
        Err(PeekError::NotRequest(_))
    ));
}

#[test]
fn rewrite_splices_only_the_model() {
    let body = Bytes::from_static(br#"{ "model" : "a\"b", "messages": [] }"#);
    let m = peek(CHAT, &body).unwrap();
    assert_eq!(m.model, "a\"b");
    let out = m.rewrite_model(&body, "deepseek-chat");
    assert_eq!(
        &out[..],
        br#"{ "model" : "deepseek-chat", "messages": [] }"#
    );
    assert_eq!(m.rewrite_model(&body, "a\"b").as_ptr(), body.as_ptr());
}

#[test]
fn stream_usage_is_added() {
    let body = Bytes::from_static(br#"{"model":"m","messages":[],"stream":true}"#);
    let out = RequestMeta::with_stream_usage(&body);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
    // Spliced, the rest byte for byte; trailing whitespace kept after the brace.
    let spaced = Bytes::from_static(b"{\"model\":\"m\",\"stream\":true}\n ");
    assert_eq!(
        &RequestMeta::with_stream_usage(&spaced)[..],
        b"{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}\n "
    );
    // Options the client set are kept, with usage added.
    let opts = Bytes::from_static(br#"{"model":"m","stream_options":{"x":1},"stream":true}"#);
    let v: serde_json::Value =
        serde_json::from_slice(&RequestMeta::with_stream_usage(&opts)).unwrap();
    assert_eq!(
        v["stream_options"],
        serde_json::json!({"x": 1, "include_usage": true})
    );
}

proptest! {
    #[test]
    fn rewrite_round_trips(model in "\\PC{1,20}", new in "\\PC{1,20}", extra in "\\PC{0,20}") {
        let body = serde_json::to_vec(&serde_json::json!({
            "a": extra, "model": model, "messages": [{"role": "user", "content": extra}]
        })).unwrap();
        let body = Bytes::from(body);
        let m = peek(CHAT, &body).unwrap();
        prop_assert_eq!(&m.model, &model);
        let out = m.rewrite_model(&body, &new);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(v["model"].as_str().unwrap(), new.as_str());
        prop_assert_eq!(v["a"].as_str().unwrap(), extra.as_str());
    }
}
