"""The OpenAI-compatible provider: the real openai SDK against a loopback chat completions API, as vLLM,
Ollama or llama.cpp's server answer it; then in the loop, through pytest's options, and through `soap eval`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from pytest_soap.config import OPTIONS
from pytest_soap.eval.command import bundled_dataset, canonical_server, select
from pytest_soap.eval.dataset import load
from pytest_soap.soap import PROVIDERS, Target
from pytest_soap.soap.llm import (
    NO_OPENAI_KEY,
    PLACEHOLDER_KEY,
    AnthropicProvider,
    ModelError,
    ModelUnavailable,
    OpenAICompatibleProvider,
    provider_for,
)
from pytest_soap.soap.loop import optimize
from pytest_soap.soap.loopback import EMPTY, ChatCompletionsServer, Error, Forever, Raw, Slow, token_count

from projects import UNIQUE, UNIQUE_TESTS, commit, git_project  # tests/projects.py

SYSTEM = "You make Python functions cheaper without changing what they do."
CONTEXT = "def total(xs):\n    return sum([x for x in xs])\n"
FIXED = SYSTEM + "\n\n" + CONTEXT  # the one system message
PROMPT = "Round 1: revise `total`."
REVISION = "```python\ndef total(xs):\n    return sum(xs)\n```"
MODEL = "starcoder2-15b"


@pytest.fixture(autouse=True)
def no_openai_environment(monkeypatch):
    """A developer's own key or server must not reach these tests."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def ask(server: ChatCompletionsServer, prompt: str = PROMPT, **provider_options):
    provider = OpenAICompatibleProvider(api_key="sk-test", base_url=f"{server.url}/v1", **provider_options)
    return provider.complete(SYSTEM, CONTEXT, prompt, MODEL, 1024)


def completion(**fields) -> Raw:
    """A 200 chat completion as given, for the shapes the fake does not make itself."""
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL, **fields}
    return Raw(json.dumps(body), "application/json")


def test_a_reply_carries_its_text_model_and_token_counts_and_the_request_what_was_asked():
    with ChatCompletionsServer([REVISION]) as server:
        reply = ask(server)

    assert reply.text == REVISION
    assert reply.model == MODEL
    assert reply.output_tokens == token_count(REVISION)
    assert reply.input_tokens == token_count(FIXED + PROMPT) and reply.cache_read_tokens == 0
    assert reply.cost_usd is None  # no list price for an open model behind someone's server
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["model"] == MODEL and request.body["max_tokens"] == 1024
    # The fixed part first, as the system message, so that a server's prefix cache can reuse it.
    assert request.body["messages"] == [{"role": "system", "content": FIXED}, {"role": "user", "content": PROMPT}]


def test_a_prefix_served_from_the_servers_cache_is_counted_as_a_cache_read():
    second_prompt = "Round 2: the candidate was rejected; try again."
    with ChatCompletionsServer([REVISION, REVISION]) as server:
        ask(server)
        second = ask(server, prompt=second_prompt)

    assert second.cache_read_tokens == token_count(FIXED)
    assert second.input_tokens == token_count(FIXED + second_prompt) - token_count(FIXED)


def test_without_a_fixed_part_the_prompt_goes_alone():
    with ChatCompletionsServer([REVISION]) as server:
        OpenAICompatibleProvider(api_key="sk-test", base_url=f"{server.url}/v1").complete("", "", PROMPT, MODEL, 64)

    assert server.requests[0].body["messages"] == [{"role": "user", "content": PROMPT}]


@pytest.mark.parametrize("answer", [EMPTY, completion(choices=[])], ids=["null-content", "no-choices"])
def test_a_reply_without_text_is_empty_text_not_a_crash(answer):
    with ChatCompletionsServer([answer]) as server:
        reply = ask(server)

    assert reply.text == "" and reply.output_tokens == 0


def test_a_reply_without_usage_counts_no_tokens_not_a_crash():
    choice = {"index": 0, "message": {"role": "assistant", "content": REVISION}, "finish_reason": "stop"}
    with ChatCompletionsServer([completion(choices=[choice])]) as server:
        reply = ask(server)

    assert reply.text == REVISION
    assert (reply.input_tokens, reply.output_tokens, reply.cache_read_tokens) == (0, 0, 0)


def test_a_429_with_retry_after_is_retried_and_the_final_reply_is_counted():
    with ChatCompletionsServer([Error(429, "rate limited", retry_after=0.01), REVISION]) as server:
        reply = ask(server)

    assert reply.text == REVISION and reply.output_tokens == token_count(REVISION)
    assert len(server.requests) == 2
    assert server.requests[1].headers["x-stainless-retry-count"] == "1"


def test_a_rate_limit_that_never_lifts_is_one_line_after_the_default_attempts():
    with ChatCompletionsServer([Forever(Error(429, "slow down", retry_after=0.01))]) as server:
        with pytest.raises(ModelError) as failure:
            ask(server)  # the default retries: three, as for Anthropic

    assert len(server.requests) == 4
    assert str(failure.value) == "the model API answered 429 Too Many Requests after 4 attempts: slow down"


@pytest.mark.parametrize("script, retries, message", [
    ([Forever(Error(500, "internal failure", retry_after=0.01))], 1,
     "the model API answered 500 Internal Server Error after 2 attempts: internal failure"),
    # What vLLM answers for a model it does not serve: not retried, and its message kept on one line.
    ([Error(404, "The model `claude-sonnet-5-5`\ndoes not exist.")], 2,
     "the model API answered 404 Not Found: The model `claude-sonnet-5-5` does not exist."),
], ids=["500-retried", "404-not-retried"])
def test_a_failing_server_is_one_line_naming_the_status(script, retries, message):
    with ChatCompletionsServer(script) as server:
        with pytest.raises(ModelError) as failure:
            ask(server, max_retries=retries)

    assert str(failure.value) == message
    assert len(server.requests) == (retries + 1 if isinstance(script[0], Forever) else 1)


def test_a_refused_key_says_so():
    with ChatCompletionsServer([REVISION], expected_key="sk-right") as server:
        with pytest.raises(ModelError, match=r"^the model API refused the key \(401\)$"):
            ask(server)


def test_a_closed_port_is_a_connection_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there

    provider = OpenAICompatibleProvider(api_key="sk-test", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(ModelError) as failure:
        provider.complete(SYSTEM, CONTEXT, PROMPT, MODEL, 64)

    assert str(failure.value) == f"cannot reach the model API at http://127.0.0.1:{port}/v1/: connection refused"


def test_a_server_slower_than_the_timeout_is_an_error():
    with ChatCompletionsServer([Slow(3.0, REVISION)]) as server:
        with pytest.raises(ModelError) as failure:
            ask(server, timeout=0.3, max_retries=0)

    assert str(failure.value) == "the model API did not answer within 0.3 s"


@pytest.mark.parametrize("answer", [
    Raw("<html>Sign in to the proxy</html>"),
    Raw('{"status": "ok"}', "application/json"),
    Raw("{", "application/json"),
    # A Messages API reply: the base URL of the other provider.
    Raw(json.dumps({"type": "message", "content": [{"type": "text", "text": "hi"}], "model": MODEL}), "application/json"),
], ids=["html", "other-json", "broken-json", "messages-api"])
def test_an_endpoint_that_is_not_a_chat_completions_api_is_one_line(answer):
    with ChatCompletionsServer([answer]) as server:
        with pytest.raises(ModelError) as failure:
            ask(server)

    assert str(failure.value) == (
        f"the model API at {server.url}/v1/ answered with something that is not a chat completions reply"
    )


def test_without_a_key_or_a_base_url_the_model_is_unavailable():
    with pytest.raises(ModelUnavailable) as failure:
        provider_for(None, "openai")

    assert str(failure.value) == NO_OPENAI_KEY
    assert "OPENAI_API_KEY is not set" in NO_OPENAI_KEY and "--soap-base-url" in NO_OPENAI_KEY


def test_a_base_url_alone_is_enough_for_a_local_server_and_a_placeholder_key_is_sent(monkeypatch):
    with ChatCompletionsServer(["from the argument", "from the environment"]) as server:
        by_argument = provider_for(None, "openai", f"{server.url}/v1")
        monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
        by_environment = provider_for(None, "openai")
        assert by_argument.complete("s", "c", "p", MODEL, 16).text == "from the argument"
        assert by_environment.complete("s", "c", "p", MODEL, 16).text == "from the environment"

    assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {PLACEHOLDER_KEY}"] * 2


def test_the_key_comes_from_the_environment_and_anthropic_stays_the_default(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    with ChatCompletionsServer(["answer"], expected_key="sk-env") as server:
        reply = provider_for(None, "openai", server.url).complete("s", "c", "p", MODEL, 16)  # no /v1: also served

    assert reply.text == "answer" and server.requests[0].path == "/chat/completions"
    assert isinstance(provider_for(None), AnthropicProvider)


def test_every_provider_the_options_offer_is_built(monkeypatch):
    option = next(opt for opt in OPTIONS if opt.flag == "--soap-provider")
    assert option.kind == PROVIDERS and option.default == PROVIDERS[0] == "anthropic"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    built = [type(provider_for(None, name, "http://127.0.0.1:9/v1")) for name in PROVIDERS]
    assert built == [AnthropicProvider, OpenAICompatibleProvider]


# ---- in the loop, through pytest, through soap eval --------------------------------------------------------

TESTS = UNIQUE_TESTS
FAST = "Here is a faster version.\n\n```python\ndef unique(items):\n    return list(dict.fromkeys(items))\n```\n"


def test_in_the_loop_a_reply_without_a_python_block_is_a_rejected_candidate(tmp_path):
    root = tmp_path / "project"
    git_project(root, UNIQUE, TESTS)
    target = Target(root, "pkg/work.py", "unique", ("tests/test_work.py::test_unique_keeps_first_seen_order",
                                                    "tests/test_work.py::test_unique_on_a_large_list"))
    with ChatCompletionsServer(["I would rather not.", FAST]) as server:
        provider = OpenAICompatibleProvider(base_url=f"{server.url}/v1", timeout=10, max_retries=0)
        opt = optimize(target, provider, MODEL, 2, ["time_s"], "time 12.0×")

    assert [c.status for c in opt.candidates] == ["rejected", "accepted"]
    assert "no ```python block" in opt.candidates[0].reason
    assert opt.status == "accepted" and "dict.fromkeys" in opt.revised
    assert opt.tokens["input"] > 0 and opt.tokens["output"] > 0
    assert [r.body["model"] for r in server.requests] == [MODEL, MODEL]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_")) and k != "CI"}


def test_through_pytest_the_loop_asks_the_server_the_options_name(tmp_path):
    root = tmp_path / "project"
    repo = git_project(root, UNIQUE, TESTS)
    (root / "pkg" / "work.py").write_text(UNIQUE.replace("if item not in seen:", "if item not in sorted(seen):"))
    commit(repo, "slower")
    with ChatCompletionsServer([Forever(FAST)]) as server:
        cmd = [sys.executable, "-m", "pytest", "--soap", "--soap-against", "HEAD~1", "--soap-optimize",
               "--soap-iterations=1", "--soap-json=report.json", "-p", "no:cacheprovider", "--soap-provider", "openai",
               f"--soap-base-url={server.url}/v1", "--soap-model", MODEL]
        run = subprocess.run(cmd, cwd=root, env=clean_env(), capture_output=True, text=True)

    report = json.loads((root / "report.json").read_text())
    assert [(o["qualname"], o["status"]) for o in report["optimizations"]] == [("unique", "accepted")], run.stdout
    assert server.requests and {r.path for r in server.requests} == {"/v1/chat/completions"}
    assert {r.body["model"] for r in server.requests} == {MODEL}
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {PLACEHOLDER_KEY}"}


def test_a_wrong_provider_name_in_the_ini_file_or_on_the_command_line_is_a_usage_error(pytester):
    pytester.makepyfile("def test_a(): pass")
    pytester.makeini("[pytest]\nsoap_provider = gpt\n")
    result = pytester.runpytest("--soap")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *--soap-provider (ini soap_provider) must be one of anthropic, openai, not 'gpt'"])
    result = pytester.runpytest("--soap", "--soap-provider", "gpt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --soap-provider: invalid choice: 'gpt'*"])


def test_another_provider_without_a_model_name_is_a_usage_error(pytester, tmp_path):
    """The default model is an Anthropic one: an OpenAI-compatible server would answer 404 once the gate ran."""
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("--soap", "--soap-optimize", "--soap-provider", "openai")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --soap-provider openai needs --soap-model (ini soap_model): *"])
    assert pytester.runpytest("--soap", "--soap-provider", "openai").ret == 0  # no loop, no model asked
    run = soap_eval("--provider", "openai", "--base-url", "http://127.0.0.1:9/v1", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr == "soap eval: --provider openai needs --model: the name its server gives the model\n"


def soap_eval(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_soap.cli", "eval", *args], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=300)


def test_soap_eval_asks_an_openai_compatible_server(tmp_path):
    dataset = bundled_dataset()
    assert dataset is not None
    problems = select(load(dataset), None, 1)
    with canonical_server(problems, "openai") as server:
        run = soap_eval("--provider", "openai", "--base-url", f"{server.url}/v1", "--model", "deepseek-coder",
                        "--limit", "1", "--iterations", "1", "--out", "out", cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert server.requests and {r.body["model"] for r in server.requests} == {"deepseek-coder"}
    (problem,) = json.loads((tmp_path / "out" / "eval.json").read_text())["problems"]
    assert problem["idx"] == problems[0].idx
    # The canonical solution came back through the SDK as a candidate that passed (kept or not, by the race).
    assert problem["loop"]["candidates"][0]["status"] in ("accepted", "no gain"), problem["loop"]


def test_soap_eval_without_a_key_or_base_url_is_one_line(tmp_path):
    run = soap_eval("--provider", "openai", "--model", MODEL, "--limit", "1", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith(f"soap eval: {NO_OPENAI_KEY}; ") and run.stderr.count("\n") == 1, run.stderr


def test_soap_eval_refuses_an_unknown_provider(tmp_path):
    run = soap_eval("--provider", "gpt", cwd=tmp_path)

    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "argument --provider: invalid choice: 'gpt'" in run.stderr


def test_the_chat_completions_fake_wants_a_key_and_its_endpoint():
    def post(path: str, headers: dict[str, str]) -> tuple[int, dict]:
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
        request = urllib.request.Request(f"{server.url}{path}", data=body,
                                         headers={"content-type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as refused:
            return refused.code, json.load(refused)

    with ChatCompletionsServer(["one"]) as server:
        assert post("/v1/messages", {"authorization": "Bearer k"})[0] == 404
        status, body = post("/v1/chat/completions", {})
        assert (status, body["error"]["message"]) == (401, "bearer key header is required")
        status, body = post("/v1/chat/completions", {"authorization": "Bearer k"})

    assert status == 200 and body["choices"][0]["message"]["content"] == "one"
    assert body["usage"]["prompt_tokens"] == token_count("hi")

