"""Other gateways, for `bench/overhead.py --peers`: Onwards 1.2.0 (Rust) and LiteLLM 1.80.5 in
proxy mode (Python), each installed once into bench/.cache (Onwards builds for a few minutes)
and run against the same mock as nginx and Laneway."""

import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request

from common import PROCS, free_port

CACHE = pathlib.Path(__file__).resolve().parent / ".cache"
ONWARDS = CACHE / "onwards" / "bin" / "onwards"
LITELLM = CACHE / "litellm" / "bin" / "litellm"


def install():
    """Installs what is missing; returns the peers that can run."""
    if not ONWARDS.exists():
        print("installing onwards 1.2.0 into bench/.cache (a few minutes)", file=sys.stderr)
        subprocess.run(["cargo", "install", "-q", "--locked", "onwards@1.2.0", "--root", str(CACHE / "onwards")],
                       check=False)
    if not LITELLM.exists():
        print("installing litellm[proxy] 1.80.5 into bench/.cache/litellm", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(CACHE / "litellm")], check=False)
        subprocess.run([str(CACHE / "litellm" / "bin" / "pip"), "install", "-q", "litellm[proxy]==1.80.5"],
                       check=False)
    return [name for name, path in (("onwards", ONWARDS), ("litellm", LITELLM)) if path.exists()]


def wait_ready(url, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def start_onwards(mock, tmp):
    port, metrics = free_port(), free_port()
    targets = tmp / "onwards.json"
    targets.write_text(json.dumps({"targets": {"mock-1": {"url": f"http://{mock}/v1"}}}))
    p = subprocess.Popen([str(ONWARDS), "--targets", str(targets), "--port", str(port),
                          "--metrics-port", str(metrics)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    PROCS.append(p)
    wait_ready(f"http://127.0.0.1:{metrics}/readyz")
    return f"127.0.0.1:{port}"


def start_litellm(mock, tmp):
    port = free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(f"""model_list:
  - model_name: mock-1
    litellm_params:
      model: openai/mock-1
      api_base: http://{mock}/v1
      api_key: none
""")
    p = subprocess.Popen([str(LITELLM), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true"})
    PROCS.append(p)
    wait_ready(f"http://127.0.0.1:{port}/health/liveliness")
    return f"127.0.0.1:{port}"
