"""Laneway driven by the official `openai` Python package, as users' programs drive it."""

import openai
import pytest
from openai import OpenAI

from conftest import KEY


@pytest.fixture
def client(gateway):
    return OpenAI(base_url=gateway, api_key=KEY, max_retries=0)


def test_list_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["mock-1", "mock-embed", "mock-large"]


def test_chat(client):
    r = client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.usage.completion_tokens == 16


def test_chat_streaming(client):
    stream = client.chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) >= 16
    assert "".join(pieces).strip().startswith("Laneway")


def test_chat_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="mock-1",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


def test_streams_that_wait_in_a_queue_read_cleanly(client):
    """Queued streams start early and carry `: queued ...` comments; the SDK must ignore them."""
    import concurrent.futures

    def one(i):
        raw = client.chat.completions.with_raw_response.create(
            model="queue-1", messages=[{"role": "user", "content": f"wait {i}"}], stream=True)
        waited = raw.headers.get("x-laneway-lane") is None
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        return waited, text

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert all(text for _, text in results), results
    assert sum(waited for waited, _ in results) >= 2, "a lane of one runs one at a time; the rest wait"


def test_the_node_sdk_reads_queued_streams(gateway):
    """The official Node SDK reads the same early-started streams (tests/compat/node)."""
    import os
    import pathlib
    import subprocess

    here = pathlib.Path(__file__).parent / "node"
    env = dict(os.environ, LANEWAY_URL=gateway, KEY=KEY)
    run = subprocess.run(["node", "queued_streams.mjs"], cwd=here, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_node_sdk_decodes_default_base64_embeddings(gateway):
    """The Node SDK's default `encoding_format: "base64"` decodes to floats of the right length."""
    import os
    import pathlib
    import subprocess

    here = pathlib.Path(__file__).parent / "node"
    env = dict(os.environ, LANEWAY_URL=gateway, KEY=KEY)
    run = subprocess.run(["node", "embeddings.mjs"], cwd=here, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_answers_have_openai_s_exact_shapes(client):
    msgs = [{"role": "user", "content": "hi"}]
    a = client.chat.completions.create(model="mock-1", messages=msgs)
    b = client.chat.completions.create(model="mock-1", messages=msgs)
    assert a.id != b.id and a.id.startswith("chatcmpl-")
    assert a.created > 1_700_000_000 and a.system_fingerprint
    cut = client.chat.completions.create(model="mock-1", messages=msgs, max_tokens=3)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3
    assert a.choices[0].finish_reason == "stop"
    two = client.chat.completions.create(model="mock-1", messages=msgs, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    longer = client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi " * 200}])
    assert longer.usage.prompt_tokens > a.usage.prompt_tokens + 100


def test_tools_and_json_mode_get_what_they_ask_for(client):
    import json

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
    r = client.chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "weather?"}], tools=tools, tool_choice="required"
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {}
    assert r.choices[0].finish_reason == "tool_calls"
    j = client.chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "json"}], response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(j.choices[0].message.content), dict)


def test_embeddings_differ_by_input_and_decode_from_base64(client):
    r = client.embeddings.create(model="mock-embed", input=["alpha", "beta", "alpha"])
    v = [d.embedding for d in r.data]
    assert v[0] == v[2] and v[0] != v[1]
    b = client.embeddings.create(model="mock-embed", input="alpha", encoding_format="base64")
    import base64
    import struct

    raw = b.data[0].embedding
    assert isinstance(raw, str)
    floats = list(struct.unpack(f"<{len(base64.b64decode(raw)) // 4}f", base64.b64decode(raw)))
    assert [round(x, 5) for x in floats] == [round(x, 5) for x in v[0]]


def test_completions(client):
    r = client.completions.create(model="mock-1", prompt="hi")
    assert r.choices[0].text


def test_embeddings(client):
    r = client.embeddings.create(model="mock-embed", input="hello")
    assert len(r.data[0].embedding) > 0


def test_embeddings_one_per_input(client):
    r = client.embeddings.create(model="mock-embed", input=["a", "b", "c"])
    assert [d.index for d in r.data] == [0, 1, 2]


def test_unknown_model_is_a_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope-1", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"
    assert e.value.response.headers["x-request-id"]


def test_forbidden_model_is_a_permission_error(client):
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(model="other-1", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_allowed"


def test_bad_key_is_an_authentication_error(gateway):
    bad = OpenAI(base_url=gateway, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "invalid_api_key"


def test_missing_messages_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="mock-1", messages=None)  # type: ignore[arg-type]
    assert e.value.code == "invalid_request"
