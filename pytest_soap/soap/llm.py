"""The model the SOAP loop asks: one call in, one ModelReply out, every failure a one-line ModelError.

The default provider is the Anthropic Messages API through the official SDK; `--soap-provider openai` picks
the OpenAI-compatible chat completions API (OpenAI itself, or vLLM, Ollama, llama.cpp's server serving an
open model) through the official openai SDK. A conftest or plugin can supply another backend through the
`pytest_soap_model_provider` hook (see pytest_soap/hookspecs.py).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

import anthropic
import openai
from anthropic.types import TextBlockParam
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from . import PROVIDERS

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_RETRIES = 3

NO_KEY = "optimisation skipped: ANTHROPIC_API_KEY is not set (or register a pytest_soap_model_provider hook)"
NO_OPENAI_KEY = ("optimisation skipped: OPENAI_API_KEY is not set and no base URL names a server "
                 "(--soap-base-url, soap eval --base-url, or OPENAI_BASE_URL)")
# What the SDK sends when a local server needs no key: see OpenAICompatibleProvider.
PLACEHOLDER_KEY = "no-key"

# USD per million tokens (input, output), looked up by the longest model-id prefix. These are list prices
# as of late 2026 and only an estimate: no batch discount, no long-context tier, no gateway's own prices.
# A model missing here (or priced only by hearsay) gets no estimate rather than a guess.
_LIST_PRICES: dict[str, tuple[float, float]] = {
    "claude-fable-5": (10.0, 50.0),  # Fable 5 and 5.1
    "claude-mythos-5": (10.0, 50.0),  # documented as priced like the Fable of the same version
    "claude-opus-5": (5.0, 25.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-8": (5.0, 25.0),
    "claude-sonnet-5": (2.0, 10.0),  # Sonnet 5 and 5.5
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-haiku-5-5": (0.10, 0.50),  # the tier for prompts up to 100k tokens
    "claude-haiku-4-5": (1.0, 5.0),
}
_CACHE_WRITE_FACTOR = 1.25
_CACHE_READ_FACTOR = 0.1


class ModelError(Exception):
    """The model could not answer; the message is one line for the user."""


class ModelUnavailable(ModelError):
    """No provider can run at all (no key, no plugin): the loop is skipped, not failed."""


@dataclass
class ModelReply:
    text: str  # the reply's text blocks joined; "" when the model returned no content
    model: str  # the model that answered, as the API names it
    input_tokens: int  # uncached input tokens
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def cost_usd(self) -> float | None:
        """An estimate from list prices; None for a model the price table does not know."""
        prices = list_price(self.model)
        if prices is None:
            return None
        per_input, per_output = prices
        input_cost = per_input * (
            self.input_tokens
            + _CACHE_WRITE_FACTOR * self.cache_write_tokens
            + _CACHE_READ_FACTOR * self.cache_read_tokens
        )
        return (input_cost + per_output * self.output_tokens) / 1_000_000


def list_price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for a model id, dated or not; None if unknown."""
    families = [family for family in _LIST_PRICES if model == family or model.startswith(family + "-")]
    return _LIST_PRICES[max(families, key=len)] if families else None


class ModelProvider(Protocol):
    """What the loop needs from a model backend."""

    def complete(self, system: str, cached_context: str, prompt: str, model: str, max_tokens: int) -> ModelReply:
        """`system` + `cached_context` are the part of the prompt that stays the same across rounds;
        `prompt` is this round's user message. Raises ModelError with a one-line message."""
        ...


class AnthropicProvider:
    """The Anthropic Messages API. The SDK retries 408, 409, 429, 5xx and connection errors with
    backoff, honouring `retry-after`; every failure left after that becomes a one-line ModelError."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        api_key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not api_key:
            raise ModelUnavailable(NO_KEY)
        self.timeout = timeout
        self._client = anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url or os.environ.get("ANTHROPIC_BASE_URL") or None,
            timeout=timeout,
            max_retries=max_retries,
        )

    def complete(self, system: str, cached_context: str, prompt: str, model: str, max_tokens: int) -> ModelReply:
        system_blocks = cached_system_blocks(system, cached_context)
        try:
            message = self._client.messages.create(
                model=model,
                max_tokens=max_tokens,
                system=system_blocks or anthropic.omit,
                messages=[{"role": "user", "content": prompt}],
            )
        except anthropic.AnthropicError as error:
            raise ModelError(_one_line(error, self._client.base_url, self.timeout)) from error
        except json.JSONDecodeError as error:
            raise ModelError(_not_a_reply(self._client.base_url, "Messages API")) from error
        if not _is_message(message):
            raise ModelError(_not_a_reply(self._client.base_url, "Messages API"))
        usage = message.usage
        return ModelReply(
            text="".join(block.text for block in message.content if block.type == "text"),
            model=message.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
            cache_write_tokens=usage.cache_creation_input_tokens or 0,
        )


class OpenAICompatibleProvider:
    """The chat completions API, as OpenAI serves it and as vLLM, Ollama and llama.cpp's server serve open
    models. The SDK retries as the Anthropic one does (408, 409, 429, 5xx and connection errors, with backoff,
    honouring `retry-after`); every failure left after that becomes a one-line ModelError."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        if not api_key and not base_url:
            raise ModelUnavailable(NO_OPENAI_KEY)
        self.timeout = timeout
        self._client = openai.OpenAI(
            # The SDK refuses to start without a key, and local servers (vLLM without --api-key, Ollama,
            # llama.cpp) ignore the Authorization header: a placeholder lets them run with no key set.
            api_key=api_key or PLACEHOLDER_KEY,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )

    def complete(self, system: str, cached_context: str, prompt: str, model: str, max_tokens: int) -> ModelReply:
        # The fixed part first, as one system message: servers with prefix caching (vLLM, OpenAI) reuse it
        # across rounds without being told.
        fixed = "\n\n".join(text for text in (system, cached_context) if text)
        messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": fixed}] if fixed else []
        messages.append({"role": "user", "content": prompt})
        try:
            completion = self._client.chat.completions.create(model=model, max_tokens=max_tokens, messages=messages)
        except openai.OpenAIError as error:
            raise ModelError(_one_line(error, self._client.base_url, self.timeout)) from error
        except json.JSONDecodeError as error:
            raise ModelError(_not_a_reply(self._client.base_url, "chat completions")) from error
        # The SDK builds its reply leniently, as Anthropic's does: HTML comes back as a str, JSON of another
        # shape as a ChatCompletion whose choices are None.
        if not isinstance(completion, ChatCompletion) or not isinstance(completion.choices, list):
            raise ModelError(_not_a_reply(self._client.base_url, "chat completions"))
        message = completion.choices[0].message if completion.choices else None
        prompt_tokens = output_tokens = cached = 0
        usage = completion.usage  # optional in the API, and some servers leave it out
        if usage is not None:
            prompt_tokens, output_tokens = usage.prompt_tokens or 0, usage.completion_tokens or 0
            details = usage.prompt_tokens_details  # what a prefix cache served: counted in prompt_tokens
            cached = (details.cached_tokens if details is not None else None) or 0
        return ModelReply(
            text=(message.content if message is not None else None) or "",
            model=completion.model or model,
            input_tokens=max(0, prompt_tokens - cached),
            output_tokens=output_tokens,
            cache_read_tokens=cached,
        )


def cached_system_blocks(system: str, cached_context: str) -> list[TextBlockParam]:
    """The fixed part of the prompt as system blocks, the last marked for the API's prompt cache so
    later rounds read it instead of paying for it again. The API rejects empty text blocks."""
    blocks: list[TextBlockParam] = [{"type": "text", "text": text} for text in (system, cached_context) if text]
    if blocks:
        blocks[-1]["cache_control"] = {"type": "ephemeral"}
    return blocks


def provider_for(config: Any, name: str = "anthropic", base_url: str | None = None) -> ModelProvider:
    """The provider a plugin registers through the `pytest_soap_model_provider` hook, else the built-in one
    called `name` (one of PROVIDERS: --soap-provider) at `base_url` (else its environment's base URL, else its
    public endpoint); ModelUnavailable when that one has no key. `config` is a pytest Config, or None outside
    pytest (then only the arguments and the environment count)."""
    if config is not None:
        provider = config.hook.pytest_soap_model_provider(config=config)
        if provider is not None:
            return provider
    if name == "openai":
        return OpenAICompatibleProvider(base_url=base_url)
    if name != "anthropic":
        raise ValueError(f"no model provider {name!r} (one of {', '.join(PROVIDERS)})")  # the options check first
    return AnthropicProvider(base_url=base_url)


def _is_message(reply: object) -> bool:
    # The SDK builds its reply leniently: a 200 of HTML comes back as a str, JSON of another shape as a
    # Message without content or usage.
    return (
        isinstance(reply, anthropic.types.Message)
        and isinstance(reply.content, list)
        and isinstance(reply.usage, anthropic.types.Usage)
    )


def _one_line(error: anthropic.AnthropicError | openai.OpenAIError, base_url: object, timeout: float) -> str:
    """What went wrong, in the user's terms, on one line. The two SDKs come from one generator and fail the
    same way, with the same retry header."""
    if isinstance(error, (anthropic.AuthenticationError, openai.AuthenticationError)):
        return "the model API refused the key (401)"
    if isinstance(error, (anthropic.APIStatusError, openai.APIStatusError)):
        phrase = _status_phrase(error.status_code)
        message = _api_message(error)
        detail = f": {message}" if message else ""
        return _single_line(f"the model API answered {phrase}{_after_attempts(error.request)}{detail}")
    # APITimeoutError is an APIConnectionError: test it first.
    if isinstance(error, (anthropic.APITimeoutError, openai.APITimeoutError)):
        return f"the model API did not answer within {timeout:g} s{_after_attempts(error.request)}"
    if isinstance(error, (anthropic.APIConnectionError, openai.APIConnectionError)):
        return _single_line(f"cannot reach the model API at {base_url}: {_connection_reason(error)}")
    return _single_line(f"the model API call failed: {error}")


def _api_message(error: anthropic.APIStatusError | openai.APIStatusError) -> str | None:
    """The message in the error's body: Anthropic's SDK extracts it; OpenAI's keeps the body's `error`
    object (or, from servers such as vLLM that send it unwrapped, the whole body)."""
    if isinstance(error, anthropic.APIStatusError):
        return error.api_message
    message = error.body.get("message") if isinstance(error.body, dict) else None
    return message if isinstance(message, str) else None


def _not_a_reply(base_url: object, api: str) -> str:
    # e.g. a base URL pointing at a login page or at a service that speaks another API
    return f"the model API at {base_url} answered with something that is not a {api} reply"


def _status_phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:  # e.g. 529, the API's "overloaded", is not in HTTPStatus
        return str(status)


def _after_attempts(request: Any) -> str:
    # Both SDKs number their retries in a header of each request they send; the failed request is the last.
    attempts = int(request.headers.get("x-stainless-retry-count", "0")) + 1
    return f" after {attempts} attempts" if attempts > 1 else ""


def _connection_reason(error: anthropic.APIConnectionError | openai.APIConnectionError) -> str:
    cause = error.__cause__
    reason = str(cause) if cause is not None and str(cause) else error.message
    return re.sub(r"^\[Errno -?\d+\]\s*", "", reason).rstrip(".").lower()


def _single_line(text: str) -> str:
    return " ".join(text.split())
