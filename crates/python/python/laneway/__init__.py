"""Parallel completions for asyncio programs, with Laneway's lanes, limits, queues and retries.

    results = await laneway.parallel_completions(requests, concurrency=8)
    async for r in laneway.iter_completions(requests, concurrency=8): ...

A request is a dict shaped like an OpenAI request body (``model``, ``messages``, ...), with an
optional ``"url"`` of ``/v1/chat/completions`` (the default), ``/v1/completions`` or
``/v1/embeddings``. Requests go to ``base_url`` (a Laneway gateway, a provider, a local server)
or through ``lanes=laneway.Lanes(config="laneway.toml")`` in this process. The work runs in Rust
without holding the GIL; cancelling the task cancels every request still running.
"""

import asyncio
import json

from . import _laneway

__all__ = ["parallel_completions", "iter_completions", "Lanes", "Result", "Progress",
           "LanewayError", "RateLimitError", "TimeoutError", "ConnectionError"]


class LanewayError(Exception):
    """A request that failed: ``status`` (HTTP, or None when no answer came), ``code`` (the
    OpenAI error code, or ``timeout`` / ``connection_error``), ``retry_after`` (seconds) and
    ``request_id`` (the id the answer carried, or the one sent)."""

    def __init__(self, message, status=None, code=None, retry_after=None, request_id=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id


class RateLimitError(LanewayError):
    """HTTP 429."""


class TimeoutError(LanewayError):  # noqa: A001 - the name users look for
    """The item did not finish within its timeout."""


class ConnectionError(LanewayError):  # noqa: A001
    """No answer: the upstream could not be reached or the connection broke."""


def _error(e):
    kind = (RateLimitError if e["status"] == 429 else
            TimeoutError if e["code"] == "timeout" else
            ConnectionError if e["status"] is None else LanewayError)
    return kind(e["message"], status=e["status"], code=e["code"], retry_after=e["retry_after"],
                request_id=e.get("request_id"))


class Result:
    """One request's outcome: ``index`` in the input, the ``request``, the ``response`` (a dict
    like OpenAI's; for a streamed request the last chunk, with all of them in ``chunks``) or the
    ``exception``."""

    __slots__ = ("index", "request", "response", "exception", "chunks", "usage")

    def __init__(self, index, request, response=None, exception=None, chunks=None, usage=None):
        self.index, self.request, self.response, self.exception = index, request, response, exception
        self.chunks, self.usage = chunks or [], usage

    def __repr__(self):
        what = f"exception={self.exception!r}" if self.exception else "response=..."
        return f"Result(index={self.index}, {what})"


class Progress:
    """Where a run stands: counts and the tokens reported so far."""

    __slots__ = ("done", "failed", "in_flight", "queued", "total", "prompt_tokens", "completion_tokens")

    def __init__(self, *values):
        for name, v in zip(self.__slots__, values):
            setattr(self, name, v)

    def __repr__(self):
        return f"Progress(done={self.done}/{self.total}, failed={self.failed}, in_flight={self.in_flight})"


class Lanes:
    """Lanes from a Laneway config (TOML, or an Onwards JSON), run in this process."""

    def __init__(self, config="laneway.toml", api_key=None):
        self._native = _laneway.Lanes(str(config), api_key)


# More in flight than this is a mistake, not a bound: no upstream takes it.
_MOST = 1 << 20


def _bound(concurrency):
    if concurrency == "auto":
        return 256, True
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise TypeError(f'concurrency must be a whole number or "auto", not {concurrency!r}')
    if not 1 <= concurrency <= _MOST:
        raise ValueError(f"concurrency must be from 1 to {_MOST}, not {concurrency}")
    return concurrency, False


def _args(requests, concurrency, timeout, fail_fast, on_progress, base_url, api_key, lanes):
    if lanes is not None and base_url is not None:
        raise ValueError("give base_url or lanes, not both")
    if lanes is None and base_url is None:
        raise ValueError('give base_url (a gateway\'s or provider\'s URL, like "http://127.0.0.1:8400/v1") '
                         "or lanes=laneway.Lanes(config=...) to run the config's lanes in this process")
    if lanes is not None and not isinstance(lanes, Lanes):
        raise TypeError(f"lanes must be a laneway.Lanes, not {type(lanes).__name__}")
    bound, adaptive = _bound(concurrency)
    callback = None
    if on_progress is not None:
        if not callable(on_progress):
            raise TypeError(f"on_progress must be callable, not {type(on_progress).__name__}")
        loop = asyncio.get_running_loop()
        # Called from a worker thread: hand the report to the event loop.
        callback = lambda *v: loop.call_soon_threadsafe(on_progress, Progress(*v))  # noqa: E731
    native = lanes._native if lanes is not None else None
    return (json.dumps(requests), bound, adaptive, timeout, fail_fast, base_url, api_key, native, callback)


def _result(requests, item):
    i = item["index"]
    if item["error"] is not None:
        return Result(i, requests[i], exception=_error(item["error"]))
    return Result(i, requests[i], response=item["response"], chunks=item.get("chunks"), usage=item.get("usage"))


async def parallel_completions(requests, concurrency=8, preserve_order=True, return_exceptions=True,
                               timeout=None, on_progress=None, base_url=None, api_key=None, lanes=None):
    """Runs every request and returns a list of :class:`Result`.

    Parameters:
        requests: OpenAI request bodies (dicts), each with an optional ``"url"``:
            ``/v1/chat/completions`` (default), ``/v1/completions`` or ``/v1/embeddings``.
        concurrency: most requests in flight at once (1 to 1,048,576), or ``"auto"`` to learn
            the upstream's capacity from its answers.
        preserve_order: results in input order (True) or in the order they finish.
        return_exceptions: keep failures in ``Result.exception`` (True), or end the run at the
            first failure, abort what runs and raise it (False).
        timeout: seconds each item may take, retries included (None: ten minutes). Wrap the
            call in ``asyncio.wait_for`` to bound the whole run.
        on_progress: called with a :class:`Progress` after every item, on the event loop.
        base_url: where requests go: a gateway's or provider's URL (``http://host:8400/v1``; a
            root URL means its ``/v1``). Give this or ``lanes``.
        api_key: sent as ``Authorization: Bearer``.
        lanes: a :class:`Lanes` to run a Laneway config's lanes in this process instead.
    """
    requests = list(requests)
    if not preserve_order:
        return [r async for r in iter_completions(requests, concurrency, return_exceptions, timeout,
                                                  on_progress, base_url, api_key, lanes)]
    raw = await _laneway.run(*_args(requests, concurrency, timeout, not return_exceptions,
                                    on_progress, base_url, api_key, lanes))
    results = [_result(requests, item) for item in json.loads(raw)]
    if not return_exceptions:
        for r in results:
            if r.exception is not None:
                raise r.exception
    return results


async def iter_completions(requests, concurrency=8, return_exceptions=True, timeout=None,
                           on_progress=None, base_url=None, api_key=None, lanes=None):
    """Yields each :class:`Result` as it finishes. Leaving the loop early, or cancelling the
    task, aborts every request still running.

    Parameters are those of :func:`parallel_completions` (without ``preserve_order``):
    ``requests``, ``concurrency`` (a number or ``"auto"``), ``return_exceptions``, ``timeout``
    (seconds per item), ``on_progress``, and ``base_url`` + ``api_key`` or ``lanes``.
    """
    requests = list(requests)
    stream = _laneway.stream(*_args(requests, concurrency, timeout, not return_exceptions,
                                    on_progress, base_url, api_key, lanes))
    try:
        while True:
            raw = await stream.next()
            if raw is None:
                return
            item = json.loads(raw)
            if "fatal" in item:
                raise LanewayError(item["fatal"])
            result = _result(requests, item)
            if result.exception is not None and not return_exceptions:
                raise result.exception
            yield result
    finally:
        stream.close()
