"""The Batch API driven by the official `openai` Python package, unchanged."""

import json
import time

import openai
import pytest
from openai import OpenAI

from conftest import KEY


@pytest.fixture
def client(gateway):
    return OpenAI(base_url=gateway, api_key=KEY, max_retries=0)


def _input(model, n):
    lines = [
        json.dumps(
            {
                "custom_id": f"item-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": f"hi {i}"}]},
            }
        )
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def _until(client, batch_id, statuses, limit=30.0):
    deadline = time.monotonic() + limit
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in statuses:
            return b
        assert time.monotonic() < deadline, f"batch stuck in {b.status}"
        time.sleep(0.05)


def test_files_and_a_batch_end_to_end(client):
    f = client.files.create(file=("prompts.jsonl", _input("mock-1", 20)), purpose="batch")
    assert f.purpose == "batch" and f.bytes > 0 and f.filename == "prompts.jsonl"
    assert client.files.retrieve(f.id).id == f.id
    assert f.id in [x.id for x in client.files.list()]
    b = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "compat"},
    )
    assert b.status in ("validating", "in_progress", "finalizing", "completed")
    b = _until(client, b.id, ("completed", "failed"))
    assert b.status == "completed", b.errors
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (20, 20, 0)
    assert b.metadata == {"job": "compat"}
    out = client.files.content(b.output_file_id).text
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["custom_id"] for r in rows) == sorted(f"item-{i}" for i in range(20))
    assert all(r["response"]["status_code"] == 200 for r in rows)
    assert rows[0]["response"]["body"]["choices"][0]["message"]["role"] == "assistant"
    assert b.id in [x.id for x in client.batches.list(limit=5).data]
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(b.id)
    assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_cancelling_a_batch(client):
    # The `queue-*` lane runs one slow request at a time: most items are still waiting.
    f = client.files.create(file=("slow.jsonl", _input("queue-1", 20)), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = client.batches.cancel(b.id)
    assert b.status in ("cancelling", "cancelled")
    b = _until(client, b.id, ("cancelled",))
    assert b.cancelled_at is not None
    assert b.request_counts.completed < 20


def test_a_malformed_file_fails_the_batch_with_line_numbers(client):
    good = _input("mock-1", 1)
    f = client.files.create(file=("bad.jsonl", good + b"{oops\n" + good), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = _until(client, b.id, ("failed", "completed"))
    assert b.status == "failed"
    assert [(e.line, e.code) for e in b.errors.data] == [(2, "invalid_json"), (3, "duplicate_custom_id")]


def test_a_batch_of_responses_api_requests(client):
    lines = [
        json.dumps({"custom_id": f"r-{i}", "method": "POST", "url": "/v1/responses",
                    "body": {"model": "mock-1", "input": f"haiku {i}", "max_output_tokens": 4}})
        for i in range(5)
    ]
    f = client.files.create(file=("responses.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/responses", completion_window="24h")
    b = _until(client, b.id, ("completed", "failed"))
    assert b.status == "completed", b.errors
    rows = [json.loads(line) for line in client.files.content(b.output_file_id).text.splitlines()]
    assert sorted(r["custom_id"] for r in rows) == [f"r-{i}" for i in range(5)]
    assert all(r["response"]["body"]["object"] == "response" for r in rows)
    assert rows[0]["response"]["body"]["usage"]["output_tokens"] == 4
