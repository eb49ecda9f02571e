"""LiteLLM's Router.abatch_completion against a mock, for bench/python_parallel.py. Runs in its own
virtualenv (LiteLLM is not a Laneway dependency): python litellm_parallel.py BASE_URL N"""

import asyncio
import resource
import sys
import time

from litellm import Router


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main(url, n):
    router = Router(model_list=[{"model_name": "mock-1",
                                 "litellm_params": {"model": "openai/mock-1", "api_base": url, "api_key": "none"}}])
    messages = [[{"role": "user", "content": f"item {i}"}] for i in range(n)]
    c0, t0 = cpu(), time.perf_counter()
    out = await router.abatch_completion(models=["mock-1"], messages=messages)
    secs, cpus = time.perf_counter() - t0, cpu() - c0
    ok = sum(1 for r in out if not isinstance(r, Exception))
    print(f"{'litellm-router':14} {ok}/{n} ok  {n / secs:8.0f} requests/s  {1000 * cpus / n:6.2f} CPU s per 1,000 (this process)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
