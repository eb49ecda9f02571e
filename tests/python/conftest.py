"""Real mock upstreams (the `laneway mock` binary) on loopback for the Python package's tests."""

import json
import os
import pathlib
import subprocess
import urllib.request

import pytest

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
