"""Starts a real Laneway gateway (and a real mock upstream) for the OpenAI SDK suite."""

import os
import pathlib
import subprocess
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("LANEWAY_BIN", str(ROOT / "target" / "debug" / "laneway"))
KEY = "sk-compat-team"
# A key allowed one request a minute: its second is Laneway's own 429.
LIMITED_KEY = "sk-compat-limited"


def _start(args, cwd):
    proc = subprocess.Popen([BIN, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("listening on http://"):
            return proc, line.strip().removeprefix("listening on http://")
    proc.kill()
    raise RuntimeError(f"laneway {args[0]} did not start")


@pytest.fixture(scope="session")
def gateway():
    with tempfile.TemporaryDirectory() as tmp:
        mock, mock_addr = _start(["mock", "--listen", "127.0.0.1:0", "--tokens-per-second", "200"], tmp)
        # Behind a lane that runs one request at a time, streams wait in its queue.
        slow, slow_addr = _start(["mock", "--listen", "127.0.0.1:0", "--latency-ms", "300"], tmp)
        # Two accounts of one provider: a response id exists only on the mock that made it.
        pool_a, pool_a_addr = _start(["mock", "--listen", "127.0.0.1:0"], tmp)
        pool_b, pool_b_addr = _start(["mock", "--listen", "127.0.0.1:0"], tmp)
        config = pathlib.Path(tmp) / "laneway.toml"
        config.write_text(
            f"""
[storage]
path = "{tmp}/data"

[[lane]]
name = "mock"
url = "http://{mock_addr}/v1"

[[route]]
model = "mock-*"
lanes = ["mock"]

[[route]]
model = "other-*"
lanes = ["mock"]

[[lane]]
name = "serial"
url = "http://{slow_addr}/v1"
concurrency_limit = {{ max_concurrent_requests = 1 }}

[[route]]
model = "queue-*"
lanes = ["serial"]

[[route]]
model = "gpt-*"
lanes = ["mock"]

[[lane]]
name = "claude"
url = "http://{mock_addr}/v1"
api = "anthropic"
api_key = "sk-ant-upstream"

[[route]]
model = "claude-*"
lanes = ["claude"]

[[lane]]
name = "pool-a"
url = "http://{pool_a_addr}/v1"

[[lane]]
name = "pool-b"
url = "http://{pool_b_addr}/v1"

[[route]]
model = "pool-*"
lanes = ["pool-a", "pool-b"]

[[key]]
name = "compat"
key = "{KEY}"
models = ["mock-*", "queue-*", "gpt-*", "claude-*", "pool-*"]

[[key]]
name = "limited"
key = "{LIMITED_KEY}"
rpm = 1
"""
        )
        gw, addr = _start(["serve", "--config", str(config), "--listen", "127.0.0.1:0"], tmp)
        try:
            yield f"http://{addr}/v1"
        finally:
            for p in (gw, mock, slow, pool_a, pool_b):
                p.terminate()
                p.wait(timeout=10)
