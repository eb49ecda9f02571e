"""The laneway package through its wheel, against real mock upstreams (`laneway mock`)."""

import asyncio
import json
import os
import pathlib
import subprocess
import time
import urllib.request

import pytest

import laneway

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("LANEWAY_BIN", str(ROOT / "target" / "debug" / "laneway"))


class Mock:
    def __init__(self, *args):
        self.proc = subprocess.Popen([BIN, "mock", "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.proc.stdout:
            if line.startswith("listening on http://"):
                self.addr = line.strip().removeprefix("listening on http://")
                break
        else:
            raise RuntimeError("the mock did not start")
        self.url = f"http://{self.addr}/v1"

    def stats(self):
        with urllib.request.urlopen(f"http://{self.addr}/mock/stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def mock_factory():
    started = []

    def make(*args):
        m = Mock(*args)
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()


def chats(n, **extra):
    return [{"model": "mock-1", "messages": [{"role": "user", "content": f"item {i}"}], **extra} for i in range(n)]


def test_results_come_back_in_input_order_with_responses(mock_factory):
    m = mock_factory()
    seen = []
    results = asyncio.run(laneway.parallel_completions(
        chats(50) + [{"url": "/v1/embeddings", "model": "mock-embed", "input": ["a", "b"]}],
        concurrency=8, base_url=m.url, on_progress=seen.append))
    assert [r.index for r in results] == list(range(51))
    assert all(r.exception is None for r in results)
    assert results[0].response["object"] == "chat.completion"
    assert results[0].request["messages"][0]["content"] == "item 0"
    assert len(results[50].response["data"]) == 2
    assert max(p.done for p in seen) == 51 and all(isinstance(p, laneway.Progress) for p in seen)
    assert m.stats()["max_in_flight"] <= 8


def test_streamed_items_keep_their_chunks_and_usage(mock_factory):
    m = mock_factory()
    [r] = asyncio.run(laneway.parallel_completions(chats(1, stream=True), base_url=m.url))
    assert len(r.chunks) > 1 and r.usage["completion_tokens"] > 0


def test_errors_carry_status_code_and_retry_after(mock_factory):
    m = mock_factory("--fail-first", "2", "--fail-retry-after-ms", "1500")
    results = asyncio.run(laneway.parallel_completions(chats(3), concurrency=1, base_url=m.url))
    # A 429 with a hint is retried: every item succeeds in the end.
    assert all(r.exception is None for r in results)

    # Three 429s in a row exhaust an item's attempts: the last one is its error, hint included.
    m = mock_factory("--fail-first", "3", "--fail-retry-after-ms", "200")
    results = asyncio.run(laneway.parallel_completions(chats(2), concurrency=1, base_url=m.url))
    e = results[0].exception
    assert isinstance(e, laneway.RateLimitError), results
    assert (e.status, e.retry_after) == (429, 0.2), (e.status, e.code, e.retry_after)
    assert results[1].exception is None

    m = mock_factory("--fail-first", "1", "--fail-status", "400", "--fail-code", "invalid_request_error")
    results = asyncio.run(laneway.parallel_completions(chats(3), concurrency=1, base_url=m.url))
    e = results[0].exception
    assert isinstance(e, laneway.LanewayError) and (e.status, e.code) == (400, "invalid_request_error")
    assert all(r.exception is None for r in results[1:])

    m = mock_factory("--fail-first", "1", "--fail-status", "400")
    with pytest.raises(laneway.LanewayError) as info:
        asyncio.run(laneway.parallel_completions(chats(20), concurrency=2, base_url=m.url, return_exceptions=False))
    assert info.value.status == 400


def test_wait_for_timing_out_cancels_the_upstream_calls(mock_factory):
    m = mock_factory("--latency-ms", "30000")

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(laneway.parallel_completions(chats(6), concurrency=3, base_url=m.url), 1.0)

    asyncio.run(main())
    deadline = time.time() + 10
    while m.stats()["in_flight"] and time.time() < deadline:
        time.sleep(0.05)
    s = m.stats()
    assert s["in_flight"] == 0 and s["cancelled"] >= 3 and s["requests"] == 3, s


def test_a_per_item_timeout_is_a_timeout_error(mock_factory):
    m = mock_factory("--latency-ms", "30000")
    results = asyncio.run(laneway.parallel_completions(chats(2), timeout=0.3, base_url=m.url))
    assert all(isinstance(r.exception, laneway.TimeoutError) for r in results)


def test_iter_completions_yields_as_they_finish(mock_factory):
    m = mock_factory()

    async def main():
        return [r async for r in laneway.iter_completions(chats(30), concurrency=4, base_url=m.url)]

    results = asyncio.run(main())
    assert sorted(r.index for r in results) == list(range(30))


def test_a_thousand_requests_at_concurrency_64(mock_factory):
    m = mock_factory()
    t0 = time.time()
    results = asyncio.run(laneway.parallel_completions(chats(1000), concurrency=64, base_url=m.url))
    assert sum(r.exception is None for r in results) == 1000
    assert m.stats()["max_in_flight"] <= 64
    print(f"1000 requests in {time.time() - t0:.2f}s")


def test_auto_concurrency_finds_a_hidden_capacity(mock_factory):
    m = mock_factory("--max-concurrent", "4", "--latency-ms", "10", "--fail-retry-after-ms", "0")
    results = asyncio.run(laneway.parallel_completions(chats(200), concurrency="auto", base_url=m.url))
    assert all(r.exception is None for r in results)
    assert m.stats()["rejected_429"] <= 4


def test_lanes_in_process_enforce_a_key_limit(mock_factory, tmp_path):
    m = mock_factory("--latency-ms", "20")
    config = tmp_path / "laneway.toml"
    config.write_text(f"""
[[lane]]
name = "m"
url = "{m.url}"
[[route]]
model = "mock-*"
lanes = ["m"]
[[key]]
name = "app"
key = "sk-app"
concurrency_limit = {{ max_concurrent_requests = 2 }}
on_limit = "queue"
""")
    lanes = laneway.Lanes(config=config, api_key="sk-app")
    results = asyncio.run(laneway.parallel_completions(chats(20), concurrency=16, lanes=lanes))
    assert all(r.exception is None for r in results)
    assert m.stats()["max_in_flight"] <= 2


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError):
        asyncio.run(laneway.parallel_completions([{"url": "/v1/images", "model": "x"}],
                                                 base_url="http://127.0.0.1:9/v1"))
    # Neither a base URL nor lanes: nothing is guessed.
    with pytest.raises(ValueError, match="give base_url .* or lanes="):
        asyncio.run(laneway.parallel_completions([{"model": "mock-1", "messages": []}]))
    with pytest.raises(ValueError, match="not both"):
        asyncio.run(laneway.parallel_completions([{"model": "mock-1", "messages": []}],
                                                 base_url="http://127.0.0.1:9/v1",
                                                 lanes=object()))
    with pytest.raises(ValueError):
        laneway.Lanes(config="/nonexistent/laneway.toml")
    # A base URL that cannot be one is refused before anything runs, naming it.
    for bad in ["localhost:8400/v1", "ftp://127.0.0.1/v1", ""]:
        with pytest.raises(ValueError, match="base_url") as e:
            asyncio.run(laneway.parallel_completions(
                [{"model": "mock-1", "messages": []}], base_url=bad))
        assert bad in str(e.value)


def test_arguments_of_the_wrong_kind_are_named():
    chat = [{"model": "mock-1", "messages": []}]
    url = "http://127.0.0.1:9/v1"  # never reached: every case fails before anything runs
    for kw, error, says in [
        ({"concurrency": -1}, ValueError, "concurrency must be from 1"),
        ({"concurrency": 2**70}, ValueError, "concurrency must be from 1"),
        ({"concurrency": "8"}, TypeError, "concurrency must be a whole number"),
        ({"concurrency": True}, TypeError, "concurrency must be a whole number"),
        ({"on_progress": 5}, TypeError, "on_progress must be callable"),
    ]:
        with pytest.raises(error, match=says):
            asyncio.run(laneway.parallel_completions(chat, base_url=url, **kw))
        with pytest.raises(error, match=says):
            asyncio.run(_drain(laneway.iter_completions(chat, base_url=url, **kw)))
    with pytest.raises(ValueError, match="request 0: url must be a string"):
        asyncio.run(laneway.parallel_completions([{"url": 5, **chat[0]}], base_url=url))


async def _drain(it):
    return [r async for r in it]


def test_a_root_url_means_its_v1(mock_factory):
    m = mock_factory()
    [r] = asyncio.run(laneway.parallel_completions(chats(1), base_url=f"http://{m.addr}"))
    assert r.exception is None and r.response["object"] == "chat.completion"


def test_mypy_strict_checks_a_program_using_the_package(tmp_path):
    """The package's stubs and py.typed give type checkers the whole API."""
    import sys

    program = tmp_path / "prog.py"
    program.write_text(
        "import asyncio\n"
        "from typing import List\n"
        "import laneway\n\n"
        "async def main() -> List[str]:\n"
        "    rs = await laneway.parallel_completions(\n"
        "        [{'model': 'mock-1', 'messages': []}], concurrency='auto',\n"
        "        base_url='http://127.0.0.1:9/v1', on_progress=lambda p: print(p.done))\n"
        "    out: List[str] = []\n"
        "    for r in rs:\n"
        "        if r.exception is not None:\n"
        "            out.append(f'{r.exception.code} {r.exception.status}')\n"
        "        elif r.response is not None:\n"
        "            out.append(str(r.response['choices']))\n"
        "    async for x in laneway.iter_completions([], lanes=laneway.Lanes('c.toml')):\n"
        "        out.append(str(x.index))\n"
        "    return out\n\n"
        "asyncio.run(main())\n"
    )
    run = subprocess.run([sys.executable, "-m", "mypy", "--strict", str(program)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    # And a wrong call is caught.
    program.write_text("import laneway\nlaneway.parallel_completions([], concurrency='eight')\n")
    run = subprocess.run([sys.executable, "-m", "mypy", "--strict", str(program)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "concurrency" in run.stdout, run.stdout


def test_other_endpoints_by_their_url(mock_factory):
    m = mock_factory()
    requests = [
        {"url": "/v1/responses", "model": "mock-1", "input": "hi", "max_output_tokens": 3},
        {"url": "/v1/messages", "model": "mock-1", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
        {"url": "/v1/moderations", "model": "mock-1", "input": "hi"},
    ]
    seen = []
    results = asyncio.run(laneway.parallel_completions(requests, base_url=m.url, on_progress=seen.append))
    assert all(r.exception is None for r in results), results
    assert results[0].response["object"] == "response"
    assert results[1].response["type"] == "message"
    assert results[2].response["results"][0]["flagged"] is False
    # Usage in either API's words is added up.
    assert seen[-1].completion_tokens == 3 + 2
