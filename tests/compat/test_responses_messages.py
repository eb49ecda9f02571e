"""The Responses API, the Agents SDK and Anthropic's Messages through Laneway, driven by the
official clients as programs use them; the lanes point at `laneway mock`."""

import os
import pathlib
import subprocess
import tempfile

import anthropic
import pytest
from openai import OpenAI

from conftest import BIN, KEY, LIMITED_KEY, _start


@pytest.fixture
def client(gateway):
    return OpenAI(base_url=gateway, api_key=KEY, max_retries=0)


@pytest.fixture
def claude(gateway):
    # Anthropic's SDK takes the root URL and sends its key as x-api-key.
    return anthropic.Anthropic(base_url=gateway.removesuffix("/v1"), api_key=KEY, max_retries=0)


def test_responses_create_stream_and_retrieve(client):
    r = client.responses.create(model="mock-1", input="Write a haiku")
    assert r.id.startswith("resp_") and r.output_text.strip().startswith("Laneway")
    assert r.usage.output_tokens == 16 and r.usage.input_tokens > 0
    again = client.responses.retrieve(r.id)
    assert again.id == r.id and again.output_text == r.output_text
    items = client.responses.input_items.list(r.id)
    assert items.data[0].content[0].text == "Write a haiku"

    with client.responses.stream(model="mock-1", input="stream it") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.usage.output_tokens == 16

    deleted = client.responses.delete(r.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    import openai

    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_conversations_reach_the_lane_that_made_their_previous_response(client):
    """A pool of two accounts: every turn after the first must run where the previous one ran,
    or the upstream would not know the id (the mock answers 404 like a real account)."""
    for conversation in range(20):
        previous = None
        lanes = []
        for turn in range(3):
            raw = client.responses.with_raw_response.create(
                model="pool-1", input=f"conversation {conversation} turn {turn}",
                previous_response_id=previous)
            lanes.append(raw.headers["x-laneway-lane"])
            previous = raw.parse().id
        assert len(set(lanes)) == 1, lanes


def test_the_lane_of_a_response_survives_a_restart():
    with tempfile.TemporaryDirectory() as tmp:
        a, a_addr = _start(["mock", "--listen", "127.0.0.1:0"], tmp)
        b, b_addr = _start(["mock", "--listen", "127.0.0.1:0"], tmp)
        config = pathlib.Path(tmp) / "laneway.toml"
        config.write_text(f"""
[storage]
path = "{tmp}/data"
[[lane]]
name = "a"
url = "http://{a_addr}/v1"
[[lane]]
name = "b"
url = "http://{b_addr}/v1"
[[route]]
model = "pool-*"
lanes = ["a", "b"]
""")
        procs = [a, b]
        try:
            gw, addr = _start(["serve", "--config", str(config), "--listen", "127.0.0.1:0"], tmp)
            c = OpenAI(base_url=f"http://{addr}/v1", api_key="unused", max_retries=0)
            ids = [c.responses.create(model="pool-1", input=f"first {i}").id for i in range(6)]
            gw.terminate()
            gw.wait(timeout=30)
            gw, addr = _start(["serve", "--config", str(config), "--listen", "127.0.0.1:0"], tmp)
            procs.append(gw)
            c = OpenAI(base_url=f"http://{addr}/v1", api_key="unused", max_retries=0)
            for i, previous in enumerate(ids):
                r = c.responses.create(model="pool-1", input=f"second {i}", previous_response_id=previous)
                assert r.previous_response_id == previous
                assert c.responses.retrieve(previous).id == previous
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)


def test_the_agents_sdk_runs_with_its_default_model(gateway):
    from agents import Agent, Runner, set_default_openai_client, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # its traces would go to OpenAI; nothing leaves loopback
    set_default_openai_client(AsyncOpenAI(base_url=gateway, api_key=KEY, max_retries=0))
    agent = Agent(name="story", instructions="Tell a story")
    result = Runner.run_sync(agent, "Once upon a time")
    assert result.final_output.strip().startswith("Laneway")


def test_models_retrieve(client):
    assert client.models.retrieve("mock-1").id == "mock-1"
    import openai

    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope-1")


def test_anthropic_messages_create_stream_and_count(claude):
    m = claude.messages.create(model="claude-x", max_tokens=64,
                               messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text.strip().startswith("Laneway") and m.stop_reason == "end_turn"
    assert m.usage.output_tokens == 16
    with claude.messages.stream(model="claude-x", max_tokens=4,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() == "Laneway keeps every lane" and final.stop_reason == "max_tokens"
    count = claude.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "hello"}])
    assert count.input_tokens > 0


def test_anthropic_errors_are_its_own_classes(gateway):
    root = gateway.removesuffix("/v1")
    limited = anthropic.Anthropic(base_url=root, api_key=LIMITED_KEY, max_retries=0)
    ask = dict(model="claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    limited.messages.create(**ask)
    with pytest.raises(anthropic.RateLimitError) as e:
        limited.messages.create(**ask)
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.body["error"]["type"] == "rate_limit_error"
    bad = anthropic.Anthropic(base_url=root, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(**ask)
    with pytest.raises(anthropic.NotFoundError):
        anthropic.Anthropic(base_url=root, api_key=KEY, max_retries=0).messages.create(
            **{**ask, "model": "nope-1"})


def test_the_node_sdk_creates_responses(gateway):
    here = pathlib.Path(__file__).parent / "node"
    env = dict(os.environ, LANEWAY_URL=gateway, KEY=KEY)
    run = subprocess.run(["node", "responses.mjs"], cwd=here, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_binary_is_the_one_under_test():
    assert pathlib.Path(BIN).exists()


# The SDK marks audio translations deprecated; the endpoint is still part of /v1 and still relayed.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_the_rest_of_v1_goes_through_the_lanes(client):
    """Moderations, images, speech and the multipart endpoints (the model a form field)."""
    mod = client.moderations.create(model="mock-moderation", input=["a", "b"])
    assert len(mod.results) == 2 and mod.results[0].flagged is False
    img = client.images.generate(model="mock-image", prompt="a lane at dawn", n=2)
    assert len(img.data) == 2 and img.data[0].b64_json
    speech = client.audio.speech.create(model="mock-tts", voice="alloy", input="hello")
    assert speech.content[:4] == b"RIFF"
    wav = speech.content
    text = client.audio.transcriptions.create(model="mock-whisper", file=("hello.wav", wav))
    assert text.text.startswith("Laneway")
    translated = client.audio.translations.create(model="mock-whisper", file=("hello.wav", wav))
    assert translated.text.startswith("Laneway")
    edited = client.images.edit(model="mock-image", image=("in.png", b"\x89PNG fake"), prompt="brighter")
    assert edited.data[0].b64_json
    import openai

    with pytest.raises(openai.NotFoundError) as e:
        client.audio.transcriptions.create(model="nope-1", file=("hello.wav", wav))
    assert e.value.code == "model_not_found"
