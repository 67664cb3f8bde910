"""Loopback servers that speak enough of a model API for its real SDK to talk to them: MessagesServer the
Anthropic Messages API, ChatCompletionsServer the OpenAI-compatible chat completions API.

Each replays a script: one step per POST to its endpoint, in order. Point ANTHROPIC_BASE_URL at a
MessagesServer's `.url`, or OPENAI_BASE_URL (or --soap-base-url) at a ChatCompletionsServer's `.url` + "/v1",
from this process or from a subprocess. The tests script the model with them, and `soap demo` replays the
recorded replies shipped with the example when no key is set.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any, TypeVar
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Error:
    """Answer with this HTTP status and an error body in the style of the server's API."""

    status: int
    message: str
    retry_after: float | None = None  # seconds, sent as the `retry-after` header


@dataclass(frozen=True)
class Raw:
    """Answer 200 with this body as it is: a gateway or page that is not the model API."""

    body: str
    content_type: str = "text/html"


@dataclass(frozen=True)
class Slow:
    """Wait this long before answering with `step`."""

    seconds: float
    step: Step


@dataclass(frozen=True)
class Choose:
    """Answer with the step `pick` returns for the request's JSON body (a reply chosen by what was asked)."""

    pick: Callable[[dict], Step]


@dataclass(frozen=True)
class Forever:
    """Answer every remaining request with `step`."""

    step: Step


class _Empty:
    def __repr__(self) -> str:
        return "EMPTY"


EMPTY = _Empty()  # a 200 with no text: an empty content list, or a chat message whose content is null

Step = str | Error | Raw | Slow | Choose | _Empty

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # the parsed JSON


def token_count(text: str) -> int:
    """The fake's deterministic stand-in for a tokenizer: four characters a token."""
    return (len(text) + 3) // 4


_Server = TypeVar("_Server", bound="ScriptedServer")


class ScriptedServer:
    """What both fakes share: the script, the recorded requests, the HTTP server on 127.0.0.1 at `.url`
    while the `with` block runs. A subclass says where its endpoint is and how its replies look."""

    paths: tuple[str, ...] = ()  # the endpoint
    key_name = ""  # what a request without the key, or with the wrong one, is told it lacks

    def __init__(self, script: list[Step | Forever], expected_key: str | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self.expected_key = expected_key
        self._script = list(script)
        self._cached_prefixes: set[str] = set()
        self._lock = threading.Lock()
        self._ids = count(1)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True  # a Slow step must not hold up the shutdown
        # A short poll interval, so that leaving the `with` block does not wait half a second.
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_port}"

    def __enter__(self: _Server) -> _Server:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def next_step(self) -> Step | None:
        """The step for this request; None when the script has run out."""
        with self._lock:
            if not self._script:
                return None
            first = self._script[0]
            if isinstance(first, Forever):
                return first.step
            self._script.pop(0)
            return first

    def reply(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        """The API's answer to the request `body`, carrying `text`."""
        raise NotImplementedError

    def error_body(self, error: Error) -> dict[str, Any]:
        raise NotImplementedError

    def _cache(self, prefix: str) -> bool:
        """Whether `prefix` was cached already; it is from now on."""
        with self._lock:
            seen = prefix in self._cached_prefixes
            self._cached_prefixes.add(prefix)
            return seen

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)


class MessagesServer(ScriptedServer):
    """`with MessagesServer(["reply"]) as server:` serves the Messages API at `server.url` until the block ends."""

    paths = ("/v1/messages",)
    key_name = "x-api-key"

    def usage(self, body: dict[str, Any], reply_text: str) -> dict[str, int]:
        """Token counts as the API reports them: the prefix up to the block marked cache_control is
        written to the cache the first time and read from it after; input_tokens counts the rest.
        (The real API caches only prefixes above a minimum length; the fake caches any.)"""
        cached, rest = _split_at_cache_mark(body)
        written = read = 0
        if cached:
            if self._cache(cached):
                read = token_count(cached)
            else:
                written = token_count(cached)
        return {
            "input_tokens": token_count(rest),
            "output_tokens": token_count(reply_text),
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }

    def message_id(self) -> str:
        return f"msg_fake{self._next_id():04d}"

    def reply(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            "id": self.message_id(),
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": self.usage(body, text),
        }

    def error_body(self, error: Error) -> dict[str, Any]:
        error_type = _ERROR_TYPES.get(error.status, "api_error")
        return {"type": "error", "error": {"type": error_type, "message": error.message}}


class ChatCompletionsServer(ScriptedServer):
    """`with ChatCompletionsServer(["reply"]) as server:` serves the chat completions API, as OpenAI, vLLM
    or Ollama do, at `server.url` + "/v1" (or at `server.url` itself) until the block ends."""

    paths = ("/v1/chat/completions", "/chat/completions")
    key_name = "bearer key"

    def usage(self, body: dict[str, Any], reply_text: str) -> dict[str, Any]:
        """Token counts as a server with automatic prefix caching (vLLM, OpenAI) reports them: the system
        message is served from the cache once it has been seen; prompt_tokens counts it either way."""
        texts = [_message_text(message) for message in body.get("messages", [])]
        system = texts[0] if body.get("messages") and body["messages"][0].get("role") == "system" else ""
        cached = token_count(system) if system and self._cache(system) else 0
        prompt, completion = token_count("".join(texts)), token_count(reply_text)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def reply(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake{self._next_id():04d}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text or None},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": self.usage(body, text),
        }

    def error_body(self, error: Error) -> dict[str, Any]:
        error_type = "server_error" if error.status >= 500 else _ERROR_TYPES.get(error.status, "invalid_request_error")
        return {"error": {"message": error.message, "type": error_type, "param": None, "code": None}}


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def _split_at_cache_mark(body: dict[str, Any]) -> tuple[str, str]:
    """The prompt's text up to and including the last cache_control block, and the text after it."""
    system = body.get("system", [])
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
    for message in body.get("messages", []):
        content = message["content"]
        blocks += [{"type": "text", "text": content}] if isinstance(content, str) else content
    texts = [block.get("text", "") for block in blocks]
    marked = [i for i, block in enumerate(blocks) if "cache_control" in block]
    cut = marked[-1] + 1 if marked else 0
    return "".join(texts[:cut]), "".join(texts[cut:])


def _handler_for(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            path = urlsplit(self.path).path
            with server._lock:
                server.requests.append(RecordedRequest(path, {k.lower(): v for k, v in self.headers.items()}, body))
            if path not in server.paths:
                return self._send_error(Error(404, f"no such endpoint: {path}"))
            key = self._key()
            if key is None:
                return self._send_error(Error(401, f"{server.key_name} header is required"))
            if server.expected_key is not None and key != server.expected_key:
                return self._send_error(Error(401, f"invalid {server.key_name}"))
            self._answer(server.next_step(), body)

        def _key(self) -> str | None:
            bearer = self.headers.get("authorization", "")
            if bearer.startswith("Bearer "):
                return bearer.removeprefix("Bearer ")
            return self.headers.get("x-api-key")

        def _answer(self, step: Step | None, body: dict[str, Any]) -> None:
            if step is None:
                return self._send_error(Error(500, "the fake's script ran out: more requests came than were scripted"))
            if isinstance(step, Choose):
                return self._answer(step.pick(body), body)
            if isinstance(step, Slow):
                time.sleep(step.seconds)
                return self._answer(step.step, body)
            if isinstance(step, Error):
                return self._send_error(step)
            if isinstance(step, Raw):
                return self._send(200, step.body.encode(), step.content_type)
            text = "" if isinstance(step, _Empty) else step
            self._send_json(200, server.reply(body, text))

        def _send_error(self, error: Error) -> None:
            headers = {} if error.retry_after is None else {"retry-after": f"{error.retry_after:g}"}
            self._send_json(error.status, server.error_body(error), headers)

        def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json", headers)

        def _send(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (its timeout), which is what a Slow step tests

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean; the requests are in server.requests

    return Handler
