use std::time::Duration;

use super::*;

/// The example from the interface contract, with its variables set.
pub const CONTRACT_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8400"
admin_key = "${LW_TEST_ADMIN}"
request_timeout = "10m"
shutdown_grace = "30s"
max_body = "32MiB"

[[lane]]
name = "deepseek-a"
url = "https://api.deepseek.com/v1"
api_key = "${LW_TEST_KEY_A}"
model = "deepseek-chat"
kind = "openai"
concurrency_limit = { max_concurrent_requests = 8 }
rate_limit = { requests_per_second = 5, burst_size = 10 }
rpm = 300
tpm = 100000
queue = { max_len = 1000, timeout = "60s" }
adaptive = true

[[lane]]
name = "glm"
url = "http://127.0.0.1:9/v1"
kind = "local"

[[route]]
model = "deepseek-*"
lanes = ["deepseek-a"]
fallbacks = ["glm-*"]

[[route]]
model = "glm-*"
lanes = ["glm"]

[[key]]
name = "team-a"
key = "${LW_TEST_TEAM}"
models = ["deepseek-*", "glm-*"]
concurrency_limit = { max_concurrent_requests = 4 }
rate_limit = { requests_per_second = 2, burst_size = 4 }
rpm = 120
tpm = 50000
priority = 0
weight = 1
on_limit = "reject"

[retry]
max_attempts = 3
budget = { ratio = 0.2, min_per_second = 10 }
backoff = { base = "200ms", max = "30s" }

[limits]
store = "memory"
"#;

/// The environment the contract example reads, given to the parse instead of set globally.
fn vars() -> std::collections::HashMap<String, String> {
    [
        ("LW_TEST_ADMIN", "admin-secret"),
        ("LW_TEST_KEY_A", "sk-upstream"),
        ("LW_TEST_TEAM", "sk-team-a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn the_contract_example_is_valid() {
    let c = Config::parse_with_vars(CONTRACT_EXAMPLE, vars()).unwrap();
    assert!(
        Config::parse(CONTRACT_EXAMPLE).is_err(),
        "the variables were given to that parse only"
    );
    assert_eq!(c.lanes.len(), 2);
    let a = &c.lanes[0];
    assert_eq!(a.api_key.as_ref().unwrap().expose(), "sk-upstream");
    assert_eq!(a.limits.max_concurrent.unwrap().get(), 8);
    assert_eq!(a.limits.rate.unwrap().burst.get(), 10);
    assert_eq!(a.queue.timeout, Duration::from_secs(60));
    assert!(a.adaptive);
    assert_eq!(c.lanes[1].kind, LaneKind::Local);
    assert_eq!(
        c.lanes[1].limits.max_concurrent.unwrap().get(),
        1,
        "local lanes run one at a time"
    );
    assert_eq!(
        c.server.admin_key.as_ref().unwrap().expose(),
        "admin-secret"
    );
    assert_eq!(c.keys[0].on_limit, OnLimit::Reject);
    assert_eq!(c.lanes[0].on_limit, OnLimit::Queue);
    assert_eq!(c.route_for("deepseek-reasoner"), Some(0));
    assert_eq!(c.route_for("glm-4"), Some(1));
    assert_eq!(c.route_for("gpt-4"), None);
    assert!(c.keys[0].allows("glm-4") && !c.keys[0].allows("gpt-4"));

    let text = describe::describe(&c);
    assert!(text.contains("deepseek-a [openai]"), "{text}");
    assert!(
        !text.contains("sk-upstream")
            && !text.contains("sk-team-a")
            && !text.contains("admin-secret")
    );
}

#[test]
fn unknown_keys_name_their_path_and_line() {
    let err = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\n\n[[lane]]\nname = \"a\"\nurl = \"http://x.example\"\nconcurency = 3\n")
        .unwrap_err();
    let p = &err.problems[0];
    assert_eq!(p.line, Some(7), "{err}");
    assert!(p.path.starts_with("lane"), "{err}");
    assert!(p.message.contains("concurency"), "{err}");
}

#[test]
fn a_number_too_large_for_toml_names_its_key_and_line() {
    let err = Config::parse(
        "[[lane]]\nname = \"a\"\nurl = \"http://x.example\"\nrpm = 99999999999999999999\n",
    )
    .unwrap_err();
    let p = &err.problems[0];
    assert_eq!(p.line, Some(4), "{err}");
    assert_eq!(p.path, "rpm", "{err}");
    assert!(p.message.contains("too large"), "{err}");
    // A line that is not `key = value` leaves the key out rather than guess.
    let err = Config::parse("[[lane]\n").unwrap_err();
    assert_eq!(err.problems[0].path, "", "{err}");
}

#[test]
fn a_wrong_shape_is_said_in_the_config_s_words() {
    for (toml, says) in [
        (
            "[[lane]]\nname = \"a\"\nurl = \"http://x.example\"\nconcurrency_limit = 4\n",
            "expected a table like { max_concurrent_requests = 8 }",
        ),
        (
            "[[lane]]\nname = \"a\"\nurl = \"http://x.example\"\nrpm = -1\n",
            "expected a non-negative integer",
        ),
        ("server = 3\n", "expected a table like [server]"),
    ] {
        let err = Config::parse(toml).unwrap_err();
        let message = &err.problems[0].message;
        assert!(message.contains(says), "{toml}: {message}");
        assert!(!message.contains("Raw"), "no type of ours leaks: {message}");
    }
}

#[test]
fn unset_variables_are_named() {
    let err = Config::parse("[server]\nadmin_key = \"${LW_TEST_SURELY_UNSET}\"\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("LW_TEST_SURELY_UNSET") && text.contains("server.admin_key"),
        "{text}"
    );
    assert_eq!(err.problems[0].line, Some(2), "{text}");
    // Several are all named in one run.
    let err = Config::parse(
        "[server]\nadmin_key = \"${LW_TEST_UNSET_1}\"\n[[lane]]\nname = \"a\"\n\
         url = \"http://h/v1\"\napi_key = \"${LW_TEST_UNSET_2}\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("server.admin_key: environment variable `LW_TEST_UNSET_1` is not set")
            && text.contains("lane[0].api_key: environment variable `LW_TEST_UNSET_2` is not set"),
        "{text}"
    );
}

#[test]
fn every_semantic_problem_is_reported() {
    let err = Config::parse(
        r#"
[server]
request_timeout = "soon"

[[lane]]
name = "a"
url = "ftp://nope"
concurrency_limit = { max_concurrent_requests = 0 }

[[lane]]
name = "a"
url = "http://127.0.0.1:1"

[[route]]
model = "x-*"
lanes = ["a", "missing"]
fallbacks = ["y-*"]

[[key]]
name = "k"
key = "s"
weight = 0
"#,
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "server.request_timeout",
        "lane[0].url",
        "lane[0].concurrency_limit.max_concurrent_requests",
        "lane[1].name: lane `a` is defined twice",
        "route[0].lanes[1]: no lane is named `missing`",
        "route[0].fallbacks[0]",
        "key[0].weight",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert!(err
        .problems
        .iter()
        .all(|p| p.path == "server.request_timeout" || p.line.is_some()));
    assert_eq!(
        err.problems
            .iter()
            .find(|p| p.path == "lane[1].name")
            .unwrap()
            .line,
        Some(10)
    );
}

#[test]
fn sizes() {
    use validate::parse_size;
    assert_eq!(parse_size("32MiB"), Ok(32 << 20));
    assert_eq!(parse_size("1KB"), Ok(1000));
    assert_eq!(parse_size("77"), Ok(77));
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("MiB").is_err());
}

#[test]
fn demo_serves_mock_models() {
    let c = Config::demo();
    assert_eq!(c.lanes[0].name, "mock");
    assert_eq!(c.lanes[0].kind, LaneKind::Mock);
    assert_eq!(c.route_for("mock-anything"), Some(0));
    assert!(c.keys.is_empty() && c.server.admin_key.is_none());
}

#[test]
fn type_errors_name_the_key_path_users_wrote() {
    let e = Config::parse("[[lane]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\napi_key = 5\n")
        .unwrap_err();
    let p = &e.problems[0];
    assert_eq!(p.path, "lane[0].api_key", "{e}");
    assert_eq!(p.line, Some(4));
    let e = Config::parse("[server]\nmax_connections = \"many\"\n").unwrap_err();
    assert_eq!(e.problems[0].path, "server.max_connections", "{e}");
    assert!(!e.to_string().contains("serde"), "{e}");
}

#[test]
fn secrets_and_urls_must_be_exactly_what_they_say() {
    let text = "[server]\nadmin_key = \"same\"\nmetrics_key = \"m\\n\"\n\
                [[lane]]\nname = \"a\"\nurl = \" http://127.0.0.1:1\"\napi_key = \"sk\\u0007\"\n\
                [[key]]\nname = \"k\"\nkey = \"same\"\n\
                [[key]]\nname = \"j\"\nkey = \"j \"\n";
    let e = Config::parse(text).unwrap_err();
    let found = |path: &str, words: &str| {
        e.problems
            .iter()
            .any(|p| p.path == path && p.message.contains(words) && p.line.is_some())
    };
    assert!(found("server.metrics_key", "control character"), "{e}");
    assert!(found("lane[0].url", "whitespace"), "{e}");
    assert!(found("lane[0].api_key", "control character"), "{e}");
    assert!(found("key[0].key", "admin_key"), "{e}");
    assert!(found("key[1].key", "whitespace"), "{e}");
    for url in [
        "http://exa mple.com/v1",
        "http://[::1/v1",
        "http:///v1/chat",
        "https://:443/v1",
    ] {
        let text = format!("[[lane]]\nname = \"a\"\nurl = \"{url}\"\n");
        let e = Config::parse(&text).unwrap_err();
        assert!(
            e.problems
                .iter()
                .any(|p| p.path == "lane[0].url" && p.message.contains("with a host")),
            "{url}: {e}"
        );
    }
    let ok = "[[lane]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/v1\"\n";
    assert!(Config::parse(ok).is_ok());
}

/// Every setting is read: values unlike the defaults come back as written.
#[test]
fn server_settings_are_read_as_written() {
    let c = Config::parse(
        "[server]\nrequest_timeout = \"90s\"\nshutdown_grace = \"7s\"\nmax_body = \"1MiB\"\n\
         log_format = \"json\"\nheader_timeout = \"3s\"\nidle_timeout = \"4s\"\n\
         body_timeout = \"5s\"\nmax_connections = 77\n[retry]\nmax_pause = \"9s\"\n",
    )
    .unwrap();
    let d = Config::parse("").unwrap();
    let s = &c.server;
    for (read, default, name) in [
        (
            s.request_timeout,
            d.server.request_timeout,
            "request_timeout",
        ),
        (s.shutdown_grace, d.server.shutdown_grace, "shutdown_grace"),
        (s.header_timeout, d.server.header_timeout, "header_timeout"),
        (s.idle_timeout, d.server.idle_timeout, "idle_timeout"),
        (s.body_timeout, d.server.body_timeout, "body_timeout"),
        (c.retry.max_pause, d.retry.max_pause, "max_pause"),
    ] {
        assert_ne!(read, default, "{name} must differ from its default here");
    }
    assert_eq!(s.request_timeout, Duration::from_secs(90));
    assert_eq!(s.shutdown_grace, Duration::from_secs(7));
    assert_eq!(s.header_timeout, Duration::from_secs(3));
    assert_eq!(s.idle_timeout, Duration::from_secs(4));
    assert_eq!(s.body_timeout, Duration::from_secs(5));
    assert_eq!(c.retry.max_pause, Duration::from_secs(9));
    assert_eq!(s.max_body, 1 << 20);
    assert_eq!(s.max_connections, 77);
    assert_eq!(s.log_format, LogFormat::Json);
    assert_ne!(d.server.log_format, LogFormat::Json);
}

#[test]
fn enumerations_name_their_choices() {
    let e =
        Config::parse("[[lane]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\nkind = \"remote\"\n")
            .unwrap_err();
    let p = &e.problems[0];
    assert_eq!(p.path, "lane[0].kind", "{e}");
    assert_eq!(p.line, Some(4), "{e}");
    assert!(
        p.message.contains("openai") && p.message.contains("local"),
        "{e}"
    );
    let e =
        Config::parse("[[key]]\nname = \"k\"\nkey = \"s\"\non_limit = \"maybe\"\n").unwrap_err();
    assert_eq!(e.problems[0].path, "key[0].on_limit", "{e}");
    assert!(e.problems[0].message.contains("reject"), "{e}");
    let e = Config::parse("[server]\nlog_format = \"xml\"\n").unwrap_err();
    assert_eq!(e.problems[0].path, "server.log_format", "{e}");
}

#[test]
fn connection_settings_and_their_bounds() {
    let e = Config::parse(
        "[server]\nmax_connections = 0\nheader_timeout = \"0s\"\nrequest_timeout = \"100000000h\"\n\
         [retry]\nmax_pause = \"2d\"\n",
    )
    .unwrap_err();
    for path in [
        "server.max_connections",
        "server.header_timeout",
        "server.request_timeout",
        "retry.max_pause",
    ] {
        assert!(
            e.problems
                .iter()
                .any(|p| p.path == path && p.line.is_some()),
            "{path}: {e}"
        );
    }
}

#[test]
fn an_open_gateway_is_declared_and_has_no_keys() {
    let c = Config::parse("[server]\nauth = \"none\"\n").unwrap();
    assert_eq!(c.server.auth, Auth::None);
    let e = Config::parse("[server]\nauth = \"none\"\n[[key]]\nname = \"k\"\nkey = \"sk\"\n")
        .unwrap_err();
    assert_eq!(e.problems[0].path, "server.auth");
    let c = Config::parse(
        "[limits]\nstore = \"redis://u:p@127.0.0.1:6390/2\"\non_store_error = \"closed\"\n\
         prefix = \"fleet-a\"\ntimeout = \"40ms\"\nlease = \"3s\"\n",
    )
    .unwrap();
    assert!(
        matches!(&c.limits.store, LimitStore::Redis(u) if u.expose() == "redis://u:p@127.0.0.1:6390/2")
    );
    assert!(!c.limits.fail_open);
    assert_eq!(
        (c.limits.prefix.as_str(), c.limits.timeout, c.limits.lease),
        ("fleet-a", Duration::from_millis(40), Duration::from_secs(3))
    );
    let e = Config::parse(
        "[limits]\nstore = \"redis://:99999\"\non_store_error = \"maybe\"\ntimeout = \"1m\"\nlease = \"100ms\"\n[storage]\npath = \"\"\nmax_file_size = 0\n",
    )
    .unwrap_err();
    let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "limits.store",
            "limits.on_store_error",
            "limits.timeout",
            "limits.lease",
            "storage.path",
            "storage.max_file_size"
        ],
        "{e}"
    );
    for (url, why) in [
        ("rediss://h", "TLS"),
        ("redis://h:0", "port"),
        ("redis://h/x", "database"),
        ("http://h", "neither"),
    ] {
        let e = Config::parse(&format!("[limits]\nstore = \"{url}\"\n")).unwrap_err();
        assert!(e.problems[0].message.contains(why), "{url}: {e}");
    }
    assert!(e.problems.iter().all(|p| p.line.is_some()));
}

proptest::proptest! {
    /// Whatever the file says, loading ends in a config or in problems that say where.
    #[test]
    fn any_toml_loads_or_says_where(text in "(\\[\\[?(server|lane|route|key|retry|limits|storage)\\]\\]?\n|[a-z_]{1,16} = (\"[ -~]{0,12}\"|-?[0-9]{1,22}|[0-9.e+-]{1,8}|true|\\[\\]|\\{ *\\})\n|[ -~]{0,20}\n){0,12}") {
        match Config::parse(&text) {
            Ok(_) => {}
            Err(e) => {
                proptest::prop_assert!(!e.problems.is_empty());
                for p in &e.problems {
                    proptest::prop_assert!(!p.message.is_empty());
                    proptest::prop_assert!(!p.path.contains("serde"), "{}", e);
                    // Empty files and sections without a table have no line to point at;
                    // anything else does.
                    if !text.trim().is_empty() && p.path.is_empty() {
                        proptest::prop_assert!(p.line.is_some(), "{}", e);
                    }
                }
            }
        }
    }
}

#[test]
fn keys_that_would_blur_who_is_who_are_refused() {
    let err = Config::parse(
        "[server]\nadmin_key = \"same-secret\"\nmetrics_key = \"same-secret\"\n\
         [[lane]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/v1\"\n\
         [[key]]\nname = \"-\"\nkey = \"sk-dash\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("server.metrics_key: equals server.admin_key"),
        "{text}"
    );
    assert!(text.contains("key[0].name: `-` is the name"), "{text}");
}

#[test]
fn a_password_in_a_lane_url_is_never_printed() {
    let c = Config::parse(
        "[[lane]]\nname = \"a\"\nurl = \"http://user:URLPASS@127.0.0.1:1/v1\"\n\
         [[route]]\nmodel = \"*\"\nlanes = [\"a\"]\n",
    )
    .unwrap();
    let shown = crate::describe::describe(&c);
    assert!(shown.contains("http://user:****@127.0.0.1:1/v1"), "{shown}");
    assert!(!shown.contains("URLPASS"), "{shown}");
    let err =
        Config::parse("[[lane]]\nname = \"a\"\nurl = \"ftp://user:URLPASS@h/v1\"\n").unwrap_err();
    assert!(!err.to_string().contains("URLPASS"), "{err}");
}
