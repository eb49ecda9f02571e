#!/usr/bin/env bash
# Overhead benchmark: direct vs nginx vs Laneway at concurrency 1 and 64.
# Usage: bench/overhead.sh [SECONDS_PER_RUN [ROUNDS]] [--limits] [--key] [--log] [--peers]
# --limits: lane limits configured but never hit; --key: a client key; --log: the request log on.
# --peers adds Onwards 1.2.0 and LiteLLM 1.80.5 (proxy), installed into bench/.cache on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq wrk nginx-light
fi
cargo build --release -q -p laneway
exec python3 bench/overhead.py "$@"
