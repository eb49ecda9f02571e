"""The laneway Python package against the usual Python way, side by side in one run: N requests
at concurrency C to a zero-latency mock, requests per second and CPU seconds per 1,000 requests.

    python bench/python_parallel.py [N] [C]     (run with the project's .venv python)

`openai-gather` is asyncio.gather over openai.AsyncOpenAI with a semaphore; with
LITELLM_PYTHON=/path/to/venv/bin/python (a virtualenv with litellm==1.80.5), LiteLLM's
Router.abatch_completion runs too, in that interpreter.
"""

import asyncio
import os
import resource
import subprocess
import sys
import time

import laneway
import openai

from common import start, PROCS


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def with_laneway(url, reqs, c):
    results = await laneway.parallel_completions(reqs, concurrency=c, base_url=url)
    return sum(r.exception is None for r in results)


async def with_openai(url, reqs, c):
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0,
                                http_client=None)
    sem = asyncio.Semaphore(c)

    async def one(r):
        async with sem:
            await client.chat.completions.create(**r)
            return 1

    done = await asyncio.gather(*(one(r) for r in reqs), return_exceptions=True)
    await client.close()
    return sum(d == 1 for d in done)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    c = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    _, mock, _ = start(["mock", "--listen", "127.0.0.1:0"])
    url = f"http://{mock}/v1"
    reqs = [{"model": "mock-1", "messages": [{"role": "user", "content": f"item {i}"}]} for i in range(n)]
    try:
        for name, fn in [("laneway", with_laneway), ("openai-gather", with_openai)]:
            c0, t0 = cpu(), time.perf_counter()
            ok = asyncio.run(fn(url, reqs, c))
            secs, cpus = time.perf_counter() - t0, cpu() - c0
            print(f"{name:14} {ok}/{n} ok  {n / secs:8.0f} requests/s  {1000 * cpus / n:6.2f} CPU s per 1,000 (this process)")
        if os.environ.get("LITELLM_PYTHON"):
            here = os.path.dirname(os.path.abspath(__file__))
            subprocess.run([os.environ["LITELLM_PYTHON"], os.path.join(here, "litellm_parallel.py"), url, str(n)], check=False)
    finally:
        for p in PROCS:
            p.kill()


if __name__ == "__main__":
    main()
