"""The model client: the real anthropic SDK against a loopback Messages API, and the provider hook in a
real pytest session."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import typing
import urllib.error
import urllib.request

import anthropic
import pytest
from anthropic.resources.messages.messages import DEPRECATED_MODELS

from pytest_soap.soap import DEFAULT_MODEL
from pytest_soap.soap.llm import (
    NO_KEY,
    AnthropicProvider,
    ModelError,
    ModelReply,
    ModelUnavailable,
    cached_system_blocks,
    provider_for,
)
from pytest_soap.soap.loopback import EMPTY, Error, Forever, MessagesServer, Raw, Slow, token_count

SYSTEM = "You make Python functions cheaper without changing what they do."
CONTEXT = "def total(xs):\n    return sum([x for x in xs])\n"
PROMPT = "Round 1: revise `total`."
REVISION = "```python\ndef total(xs):\n    return sum(xs)\n```"


def ask(server: MessagesServer, prompt: str = PROMPT, **provider_options) -> ModelReply:
    provider = AnthropicProvider(api_key="sk-test", base_url=server.url, **provider_options)
    return provider.complete(SYSTEM, CONTEXT, prompt, "claude-sonnet-5-5", 1024)


def test_a_reply_carries_its_text_model_and_token_counts():
    with MessagesServer([REVISION]) as server:
        reply = ask(server)

    assert reply.text == REVISION
    assert reply.model == "claude-sonnet-5-5"
    assert reply.output_tokens == token_count(REVISION)
    assert reply.input_tokens == token_count(PROMPT)  # the fixed part is counted as a cache write
    assert reply.cache_write_tokens == token_count(SYSTEM + CONTEXT)
    assert reply.cache_read_tokens == 0
    (request,) = server.requests
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["model"] == "claude-sonnet-5-5"
    assert request.body["max_tokens"] == 1024
    assert request.body["messages"] == [{"role": "user", "content": PROMPT}]


def test_the_fixed_part_goes_as_system_blocks_and_the_last_is_marked_for_the_cache():
    with MessagesServer([REVISION, REVISION]) as server:
        first = ask(server)
        second = ask(server, prompt="Round 2: the candidate was rejected; try again.")

    assert server.requests[0].body["system"] == [
        {"type": "text", "text": SYSTEM},
        {"type": "text", "text": CONTEXT, "cache_control": {"type": "ephemeral"}},
    ]
    assert second.cache_read_tokens == first.cache_write_tokens > 0
    assert second.cache_write_tokens == 0
    assert second.cost_usd < first.cost_usd  # a cache read costs a tenth of input, a write 1.25x


def test_empty_parts_of_the_fixed_prompt_are_left_out():
    # The API rejects empty text blocks.
    assert cached_system_blocks("", CONTEXT) == [
        {"type": "text", "text": CONTEXT, "cache_control": {"type": "ephemeral"}}
    ]
    with MessagesServer([REVISION]) as server:
        AnthropicProvider(api_key="sk-test", base_url=server.url).complete("", "", PROMPT, "claude-sonnet-5-5", 64)
    assert "system" not in server.requests[0].body


def test_a_429_with_retry_after_is_retried_and_then_answers():
    with MessagesServer([Error(429, "rate limited", retry_after=0), REVISION]) as server:
        reply = ask(server, max_retries=2)

    assert reply.text == REVISION
    assert len(server.requests) == 2


def test_a_server_failing_forever_gives_one_line_naming_the_status_after_bounded_attempts():
    with MessagesServer([Forever(Error(500, "internal failure", retry_after=0.01))]) as server:
        with pytest.raises(ModelError) as failure:
            ask(server, max_retries=2)

    assert len(server.requests) == 3
    assert str(failure.value) == "the model API answered 500 Internal Server Error after 3 attempts: internal failure"


def test_a_request_error_is_not_retried_and_its_message_stays_on_one_line():
    with MessagesServer([Error(400, "model: claude-nope\nwas not found")]) as server:
        with pytest.raises(ModelError) as failure:
            ask(server, max_retries=2)

    assert len(server.requests) == 1
    assert str(failure.value) == "the model API answered 400 Bad Request: model: claude-nope was not found"


def test_a_refused_key_says_so():
    with MessagesServer([REVISION], expected_key="sk-right") as server:
        with pytest.raises(ModelError, match=r"^the model API refused the key \(401\)$"):
            ask(server)


def test_an_empty_reply_is_empty_text_not_a_crash():
    with MessagesServer([EMPTY]) as server:
        reply = ask(server)

    assert reply.text == ""
    assert reply.output_tokens == 0


@pytest.mark.parametrize(
    "answer",
    [Raw("<html>Sign in to the proxy</html>"), Raw('{"status": "ok"}', "application/json"), Raw("{", "application/json")],
    ids=["html", "other-json", "broken-json"],
)
def test_an_endpoint_that_is_not_the_messages_api_is_one_line(answer):
    with MessagesServer([answer]) as server:
        with pytest.raises(ModelError) as failure:
            ask(server)

    assert str(failure.value) == (
        f"the model API at {server.url} answered with something that is not a Messages API reply"
    )


def test_without_a_key_the_model_is_unavailable(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)

    with pytest.raises(ModelUnavailable) as failure:
        provider_for(None)

    assert str(failure.value) == NO_KEY
    assert "ANTHROPIC_API_KEY is not set" in NO_KEY


def test_a_closed_port_is_a_connection_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there

    provider = AnthropicProvider(api_key="sk-test", base_url=f"http://127.0.0.1:{port}", max_retries=0)
    with pytest.raises(ModelError) as failure:
        provider.complete(SYSTEM, CONTEXT, PROMPT, "claude-sonnet-5-5", 64)

    assert str(failure.value) == f"cannot reach the model API at http://127.0.0.1:{port}: connection refused"


def test_a_server_slower_than_the_timeout_is_an_error():
    with MessagesServer([Slow(3.0, REVISION)]) as server:
        with pytest.raises(ModelError) as failure:
            ask(server, timeout=0.3, max_retries=0)

    assert str(failure.value) == "the model API did not answer within 0.3 s"


def test_the_environment_points_a_subprocess_at_the_fake(tmp_path):
    script = textwrap.dedent(
        """
        from pytest_soap.soap.llm import provider_for
        reply = provider_for(None).complete("system", "context", "prompt", "claude-sonnet-5-5", 64)
        print(reply.text)
        """
    )
    with MessagesServer(["from the fake"], expected_key="sk-env") as server:
        env = {**os.environ, "ANTHROPIC_API_KEY": "sk-env", "ANTHROPIC_BASE_URL": server.url}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from the fake"
    assert len(server.requests) == 1


def test_the_fake_accepts_either_auth_header_and_refuses_none():
    def post(headers: dict[str, str]) -> tuple[int, dict]:
        body = json.dumps({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
        request = urllib.request.Request(
            f"{server.url}/v1/messages", data=body.encode(), headers={"content-type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as refused:
            return refused.code, json.load(refused)

    with MessagesServer(["one", "two"]) as server:
        assert post({"x-api-key": "k"})[0] == 200
        assert post({"authorization": "Bearer k"})[0] == 200
        status, body = post({})

    assert (status, body["error"]["type"]) == (401, "authentication_error")


def test_cost_is_estimated_from_list_prices_and_unknown_models_have_none():
    million = 1_000_000
    reply = ModelReply("", "claude-sonnet-5-5-20260801", million, million, million, million)
    # Sonnet 5.5: $2 in, $10 out; a cache write 1.25x input, a read 0.1x.
    assert reply.cost_usd == pytest.approx(2 + 10 + 2.5 + 0.2)
    assert ModelReply("", "claude-opus-5-5", million, 0).cost_usd == pytest.approx(4)
    assert ModelReply("", "claude-opus-5", million, 0).cost_usd == pytest.approx(5)
    assert ModelReply("", "some-gateway-model", million, million).cost_usd is None


def test_the_default_model_is_one_the_sdk_knows_and_has_not_deprecated():
    literal, _ = typing.get_args(anthropic.types.Model)
    assert DEFAULT_MODEL in typing.get_args(literal)
    assert DEFAULT_MODEL not in DEPRECATED_MODELS


CONFTEST = """
    import os

    from pytest_soap.hookspecs import register_hookspecs
    from pytest_soap.soap.llm import ModelReply


    class CannedProvider:
        def complete(self, system, cached_context, prompt, model, max_tokens):
            return ModelReply(text=f"canned: {prompt}", model=model, input_tokens=1, output_tokens=1)


    def pytest_addhooks(pluginmanager):
        register_hookspecs(pluginmanager)  # what pytest-soap's plugin does; it is off here (-p no:soap)


    def pytest_soap_model_provider(config):
        return CannedProvider() if os.environ.get("USE_CANNED") else None
"""

HOOK_TESTS = """
    import pytest

    from pytest_soap.soap.llm import AnthropicProvider, ModelUnavailable, provider_for


    def test_a_registered_provider_wins_over_the_key(request, monkeypatch):
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
        monkeypatch.setenv("USE_CANNED", "1")
        reply = provider_for(request.config).complete("system", "context", "prompt", "any-model", 16)
        assert reply.text == "canned: prompt"


    def test_no_answer_falls_back_to_the_key(request, monkeypatch):
        monkeypatch.delenv("USE_CANNED", raising=False)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
        assert isinstance(provider_for(request.config), AnthropicProvider)


    def test_no_answer_and_no_key_is_unavailable(request, monkeypatch):
        monkeypatch.delenv("USE_CANNED", raising=False)
        monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
        with pytest.raises(ModelUnavailable):
            provider_for(request.config)
"""


def test_a_conftest_registers_another_model_provider_through_the_hook(pytester):
    pytester.makeconftest(textwrap.dedent(CONFTEST))
    pytester.makepyfile(test_hook=textwrap.dedent(HOOK_TESTS))

    result = pytester.runpytest("-p", "no:soap")

    result.assert_outcomes(passed=3)
