"""The model the SOAP loop asks: one call in, one ModelReply out, every failure a one-line ModelError.

The default provider is the Anthropic Messages API through the official SDK. A conftest or plugin can
supply another backend through the `pytest_soap_model_provider` hook (see pytest_soap/hookspecs.py).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

import anthropic
from anthropic.types import TextBlockParam

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_RETRIES = 3

NO_KEY = "optimisation skipped: ANTHROPIC_API_KEY is not set (or register a pytest_soap_model_provider hook)"

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
            raise ModelError(self._one_line(error)) from error
        except json.JSONDecodeError as error:
            raise ModelError(self._not_messages_api()) from error
        if not _is_message(message):
            raise ModelError(self._not_messages_api())
        usage = message.usage
        return ModelReply(
            text="".join(block.text for block in message.content if block.type == "text"),
            model=message.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
            cache_write_tokens=usage.cache_creation_input_tokens or 0,
        )

    def _one_line(self, error: anthropic.AnthropicError) -> str:
        """What went wrong, in the user's terms, on one line."""
        if isinstance(error, anthropic.AuthenticationError):
            return "the model API refused the key (401)"
        if isinstance(error, anthropic.APIStatusError):
            phrase = _status_phrase(error.status_code)
            detail = f": {error.api_message}" if error.api_message else ""
            return _single_line(f"the model API answered {phrase}{_after_attempts(error.request)}{detail}")
        # APITimeoutError is an APIConnectionError: test it first.
        if isinstance(error, anthropic.APITimeoutError):
            return f"the model API did not answer within {self.timeout:g} s{_after_attempts(error.request)}"
        if isinstance(error, anthropic.APIConnectionError):
            return _single_line(f"cannot reach the model API at {self._client.base_url}: {_connection_reason(error)}")
        return _single_line(f"the model API call failed: {error}")

    def _not_messages_api(self) -> str:
        # e.g. ANTHROPIC_BASE_URL pointing at a login page or at a service that is not a Messages API
        return f"the model API at {self._client.base_url} answered with something that is not a Messages API reply"


def cached_system_blocks(system: str, cached_context: str) -> list[TextBlockParam]:
    """The fixed part of the prompt as system blocks, the last marked for the API's prompt cache so
    later rounds read it instead of paying for it again. The API rejects empty text blocks."""
    blocks: list[TextBlockParam] = [{"type": "text", "text": text} for text in (system, cached_context) if text]
    if blocks:
        blocks[-1]["cache_control"] = {"type": "ephemeral"}
    return blocks


def provider_for(config: Any) -> ModelProvider:
    """The provider a plugin registers through the `pytest_soap_model_provider` hook, else the Anthropic
    API when ANTHROPIC_API_KEY is set, else ModelUnavailable. `config` is a pytest Config, or None
    outside pytest (then only the environment counts)."""
    if config is not None:
        provider = config.hook.pytest_soap_model_provider(config=config)
        if provider is not None:
            return provider
    return AnthropicProvider()


def _is_message(reply: object) -> bool:
    # The SDK builds its reply leniently: a 200 of HTML comes back as a str, JSON of another shape as a
    # Message without content or usage.
    return (
        isinstance(reply, anthropic.types.Message)
        and isinstance(reply.content, list)
        and isinstance(reply.usage, anthropic.types.Usage)
    )


def _status_phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:  # e.g. 529, the API's "overloaded", is not in HTTPStatus
        return str(status)


def _after_attempts(request: Any) -> str:
    # The SDK numbers its retries in a header of each request it sends; the failed request is the last.
    attempts = int(request.headers.get("x-stainless-retry-count", "0")) + 1
    return f" after {attempts} attempts" if attempts > 1 else ""


def _connection_reason(error: anthropic.APIConnectionError) -> str:
    cause = error.__cause__
    reason = str(cause) if cause is not None and str(cause) else error.message
    return re.sub(r"^\[Errno -?\d+\]\s*", "", reason).rstrip(".").lower()


def _single_line(text: str) -> str:
    return " ".join(text.split())
