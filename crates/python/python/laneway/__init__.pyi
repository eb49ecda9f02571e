"""Types of the laneway package: parallel completions with Laneway's lanes, limits and retries."""

import os
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterable, List, Literal, Mapping, Optional, Union

Request = Mapping[str, Any]
"""An OpenAI request body (``model``, ``messages``, ...), with an optional ``"url"``."""

Concurrency = Union[int, Literal["auto"]]

class LanewayError(Exception):
    message: str
    status: Optional[int]
    code: Optional[str]
    retry_after: Optional[float]
    request_id: Optional[str]
    def __init__(
        self,
        message: str,
        status: Optional[int] = ...,
        code: Optional[str] = ...,
        retry_after: Optional[float] = ...,
        request_id: Optional[str] = ...,
    ) -> None: ...

class RateLimitError(LanewayError): ...
class TimeoutError(LanewayError): ...  # noqa: A001
class ConnectionError(LanewayError): ...  # noqa: A001

class Result:
    index: int
    request: Request
    response: Optional[Dict[str, Any]]
    exception: Optional[LanewayError]
    chunks: List[Dict[str, Any]]
    usage: Optional[Dict[str, Any]]

class Progress:
    done: int
    failed: int
    in_flight: int
    queued: int
    total: int
    prompt_tokens: int
    completion_tokens: int

class Lanes:
    def __init__(self, config: Union[str, "os.PathLike[str]"] = ..., api_key: Optional[str] = ...) -> None: ...

def parallel_completions(
    requests: Iterable[Request],
    concurrency: Concurrency = ...,
    preserve_order: bool = ...,
    return_exceptions: bool = ...,
    timeout: Optional[float] = ...,
    on_progress: Optional[Callable[[Progress], object]] = ...,
    base_url: Optional[str] = ...,
    api_key: Optional[str] = ...,
    lanes: Optional[Lanes] = ...,
) -> Awaitable[List[Result]]: ...

def iter_completions(
    requests: Iterable[Request],
    concurrency: Concurrency = ...,
    return_exceptions: bool = ...,
    timeout: Optional[float] = ...,
    on_progress: Optional[Callable[[Progress], object]] = ...,
    base_url: Optional[str] = ...,
    api_key: Optional[str] = ...,
    lanes: Optional[Lanes] = ...,
) -> AsyncIterator[Result]: ...

__all__: List[str]
