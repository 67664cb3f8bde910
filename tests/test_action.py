"""`soap action` end to end, as GitHub runs it: a pull request's event payload, a local bare repository as
`origin`, a loopback GitHub REST API recording every call, and the loopback Messages API for the model."""

import json
import os
import subprocess
import sys
import time

import git
import pytest

from pytest_soap.report.markdown import MARKER
from pytest_soap.soap.loopback import ChatCompletionsServer, Forever, MessagesServer

from github_server import GitHubServer  # tests/github_server.py
from projects import (
    UNIQUE as ORIGINAL,
    UNIQUE_TESTS,  # tests/projects.py
)

TOKEN, KEY = "ghs_SECRETtoken0123456789", "sk-ant-SECRETkey0123456789"
REPO = "octo/shop"

TESTS = UNIQUE_TESTS + '''

def test_no_github_token_in_reach():
    import os
    assert not any("SECRETtoken" in value for value in os.environ.values())
'''
FAST = "Faster:\n\n```python\ndef unique(items):\n    return list(dict.fromkeys(items))\n```\n"
ACTOR = git.Actor("dev", "dev@example.com")


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """A bare `origin` with `main`, and `feature`: a pull request's branch that slows `unique` down."""
    tmp = tmp_path_factory.mktemp("origin")
    bare = git.Repo.init(tmp / "origin.git", bare=True)
    dev = git.Repo.init(tmp / "dev", initial_branch="main")
    root = tmp / "dev"
    (root / "pkg").mkdir()
    (root / "tests").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "work.py").write_text(ORIGINAL)
    (root / "tests" / "test_work.py").write_text(TESTS)
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n'
                                         'addopts = "-p no:cacheprovider"\n')
    (root / ".gitignore").write_text(".soap/\n")
    dev.git.add("--all")
    base = dev.index.commit("shop", author=ACTOR, committer=ACTOR)
    dev.create_remote("origin", str(bare.git_dir)).push("main")
    dev.git.checkout("-b", "feature")
    (root / "pkg" / "work.py").write_text(ORIGINAL.replace("if item not in seen:", "if item not in sorted(seen):"))
    dev.git.add("--all")
    head = dev.index.commit("tidy unique", author=ACTOR, committer=ACTOR)
    dev.remotes.origin.push("feature")
    return tmp / "origin.git", base.hexsha, head.hexsha


def event(base_sha, head_sha, *, head_ref="feature", fork=False, draft=False, sender=("dev", "User")):
    return {"action": "synchronize", "number": 7, "sender": {"login": sender[0], "type": sender[1]},
            "pull_request": {"number": 7, "draft": draft,
                             "head": {"ref": head_ref, "sha": head_sha,
                                      "repo": {"full_name": "someone/shop" if fork else REPO}},
                             "base": {"ref": "main", "sha": base_sha, "repo": {"full_name": REPO}}}}


class Job:
    """One GitHub job's files and environment, around a fresh clone of origin at the pull request's head."""

    def __init__(self, tmp_path, origin, github_url, messages_url=None, payload=None, event_name="pull_request",
                 shallow=False, **inputs):
        bare, base_sha, head_sha = origin
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path
        self.workspace = tmp_path / "workspace"
        if shallow:  # actions/checkout's default: the head commit alone
            git.Repo.clone_from(f"file://{bare}", self.workspace, depth=1, branch="feature")
        elif not self.workspace.exists():
            git.Repo.clone_from(str(bare), self.workspace).git.checkout("--detach", head_sha)
        (tmp_path / "runner").mkdir(exist_ok=True)
        self.summary, self.output = tmp_path / "summary.md", tmp_path / "output.txt"
        for path in (self.summary, self.output):
            path.write_text("")
        event_path = tmp_path / "event.json"
        event_path.write_text(json.dumps(payload or event(base_sha, head_sha)))
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("GITHUB_", "INPUT_", "ANTHROPIC_", "OPENAI_", "PYTEST_")) and k != "CI"}
        self.env.update(CI="true", GITHUB_EVENT_NAME=event_name, GITHUB_EVENT_PATH=str(event_path),
                        GITHUB_REPOSITORY=REPO, GITHUB_API_URL=github_url, GITHUB_WORKSPACE=str(self.workspace),
                        GITHUB_STEP_SUMMARY=str(self.summary), GITHUB_OUTPUT=str(self.output),
                        RUNNER_TEMP=str(tmp_path / "runner"), INPUT_GITHUB_TOKEN=TOKEN, INPUT_ANTHROPIC_API_KEY=KEY,
                        INPUT_MAX_ITERATIONS="1")
        if messages_url:
            self.env["ANTHROPIC_BASE_URL"] = messages_url
        self.env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})

    def run(self) -> subprocess.CompletedProcess:
        self.result = subprocess.run([sys.executable, "-m", "pytest_soap.cli", "action"], cwd=self.workspace,
                                     env=self.env, capture_output=True, text=True, timeout=600)
        return self.result

    def outputs(self) -> dict:
        return dict(line.split("=", 1) for line in self.output.read_text().splitlines() if "=" in line)

    def printed(self) -> str:
        """Everything the step printed and wrote, but the lines that ask the runner to mask the secrets: no
        secret may be in it."""
        stdout = "\n".join(line for line in self.result.stdout.splitlines() if not line.startswith("::add-mask::"))
        assert f"::add-mask::{TOKEN}" in self.result.stdout
        return stdout + self.result.stderr + self.summary.read_text() + self.output.read_text()


def branches(bare) -> dict:
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads"],
                         cwd=bare, capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines())


def test_a_regressing_pull_request_gets_one_comment_and_one_optimisation_pr_updated_on_the_second_run(tmp_path, origin):
    bare = origin[0]
    with GitHubServer(REPO, token=TOKEN) as github, MessagesServer([Forever(FAST)]) as model:
        job = Job(tmp_path, origin, github.url, model.url)
        first = job.run()
        assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
        outputs = job.outputs()
        assert int(outputs["regressions"]) >= 1 and outputs["pr_url"] and outputs["report"].endswith(".json")
        # Every test passed, the one that looks for the GitHub token in its environment included.
        assert {t["outcome"] for t in json.loads(open(outputs["report"]).read())["tests"]} == {"passed"}
        summary = job.summary.read_text()
        assert "tests/test_work.py::test_unique_on_a_large_list" in summary and "xychart-beta" in summary
        assert "pkg/work.py" in summary and "unique" in summary
        # An annotation at the function to blame.
        assert "::warning file=pkg/work.py,line=1," in first.stdout
        second = job.run()
        assert second.returncode == 1, second.stdout[-3000:]
        # Exactly one pull request into the head branch and one sticky comment, each updated, never duplicated.
        assert [(p["head"]["ref"], p["base"]["ref"]) for p in github.pulls] == [("soap/feature", "feature")]
        assert len(github.comments[7]) == 1 and github.comments[7][0]["body"].startswith(MARKER)
        writes = [(c.method, c.path.split("?")[0].rsplit("/", 1)[0]) for c in github.writes]
        assert writes.count(("POST", f"/repos/{REPO}/issues/7")) == 1 and ("PATCH", f"/repos/{REPO}/issues/comments") in writes
        assert writes.count(("POST", f"/repos/{REPO}")) == 1 and ("PATCH", f"/repos/{REPO}/pulls") in writes
        body = github.pulls[0]["body"]
        assert "| before | after |" in body and "accepted" in body and "How to apply" in body
        # The pushed code was checked once more behind the sandbox's wall, and the body says so.
        assert "  - final check: passed: its covering tests ran again with the revision in the tree, behind the " \
               "sandbox's wall" in body and "  - sandbox: an audit hook stops anything" in body
        assert TOKEN not in job.printed() and KEY not in job.printed()
    # The pushed branch holds the faster code, and its tests pass.
    assert "soap/feature" in branches(bare)
    checkout = git.Repo.clone_from(str(bare), tmp_path / "check", branch="soap/feature")
    work = (tmp_path / "check" / "pkg" / "work.py").read_text()
    assert "dict.fromkeys" in work and checkout.head.commit.parents[0].hexsha == origin[2]
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=tmp_path / "check", capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout


def test_a_fork_gets_the_gate_and_summary_with_no_write_at_all(tmp_path, origin):
    bare = origin[0]
    before = branches(bare)
    with GitHubServer(REPO, token=TOKEN) as github, MessagesServer([Forever(FAST)]) as model:
        # A shallow checkout, too: the base commit is fetched from origin before the gate.
        job = Job(tmp_path, origin, github.url, model.url, payload=event(origin[1], origin[2], fork=True), shallow=True)
        assert git.Repo(job.workspace).git.cat_file("-t", origin[1], with_exceptions=False) != "commit"
        result = job.run()
        assert result.returncode == 1, result.stdout[-3000:]
        assert github.writes == [] and model.requests == []
    summary = job.summary.read_text()
    assert "tests/test_work.py::test_unique_on_a_large_list" in summary and "forks" in summary
    assert branches(bare) == before and job.outputs()["pr_url"] == ""


@pytest.mark.parametrize("payload, why", [
    (dict(draft=True), "a draft"),
    (dict(head_ref="soap/feature"), "pytest-soap's own branches"),
    (dict(sender=("dependabot[bot]", "Bot")), "opened by a bot"),
])
def test_drafts_its_own_branches_and_bots_are_skipped_without_a_call(tmp_path, origin, payload, why):
    with GitHubServer(REPO, token=TOKEN) as github:
        job = Job(tmp_path, origin, github.url, payload=event(origin[1], origin[2], **payload))
        result = job.run()
        assert result.returncode == 0 and github.calls == []
    assert why in job.summary.read_text() and job.outputs()["regressions"] == "0"


def test_refusals_from_github_are_one_line_each_and_the_gate_verdict_stands(tmp_path, origin):
    with GitHubServer(REPO, token=TOKEN) as github, MessagesServer([Forever(FAST)]) as model:
        github.fail("POST", f"/repos/{REPO}/pulls", 403, "GitHub Actions is not permitted to create or approve pull requests.")
        github.fail("GET", f"/repos/{REPO}/issues/7/comments", 403, "API rate limit exceeded",
                    headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 3600)}, times=2)
        job = Job(tmp_path, origin, github.url, model.url)
        result = job.run()
    summary = job.summary.read_text()
    assert result.returncode == 1, result.stdout[-3000:]
    assert "Allow GitHub Actions to create and approve pull requests" in summary
    assert "rate limit" in summary and "comment was not written" in summary
    assert github.pulls == [] and job.outputs()["pr_url"] == ""
    assert TOKEN not in job.printed()


def test_a_rejected_push_is_one_line_and_no_pull_request_is_opened(tmp_path, origin):
    bare = origin[0]
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected: no pushes today' >&2\nexit 1\n")
    hook.chmod(0o755)
    try:
        with GitHubServer(REPO, token=TOKEN) as github, MessagesServer([Forever(FAST)]) as model:
            job = Job(tmp_path, origin, github.url, model.url)
            result = job.run()
    finally:
        hook.unlink()
    summary = job.summary.read_text()
    assert result.returncode == 1 and "was not pushed" in summary and "rejected" in summary, summary
    assert github.pulls == [] and len(github.comments[7]) == 1


def test_without_a_key_the_action_gates_only(tmp_path, origin):
    with GitHubServer(REPO, token=TOKEN) as github:
        job = Job(tmp_path, origin, github.url, anthropic_api_key="")
        result = job.run()
    assert result.returncode == 1 and github.pulls == [] and len(github.comments[7]) == 1
    assert "optimisation skipped: no anthropic_api_key" in job.summary.read_text()


def test_with_provider_openai_the_loop_asks_the_chat_completions_server_with_that_key_alone(tmp_path, origin):
    openai_key = "sk-proj-SECRETkey0123456789"
    # A reply without code: the loop runs and keeps nothing, so no branch is pushed to the shared origin.
    with GitHubServer(REPO, token=TOKEN) as github, \
            ChatCompletionsServer([Forever("I would rather not.")], expected_key=openai_key) as model:
        job = Job(tmp_path, origin, github.url, provider="openai", base_url=f"{model.url}/v1",
                  openai_api_key=openai_key, model="qwen2.5-coder")
        result = job.run()
        assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
        assert model.requests and {r.body["model"] for r in model.requests} == {"qwen2.5-coder"}
        assert {r.headers["authorization"] for r in model.requests} == {f"Bearer {openai_key}"}
    report = json.loads(open(job.outputs()["report"]).read())
    assert [o["status"] for o in report["optimizations"]] == ["rejected"] and github.pulls == []
    assert f"::add-mask::{openai_key}" in result.stdout and openai_key not in job.printed()


def test_with_provider_openai_and_neither_key_nor_base_url_the_action_gates_only(tmp_path, origin):
    with GitHubServer(REPO, token=TOKEN) as github:
        job = Job(tmp_path, origin, github.url, provider="openai", model="qwen2.5-coder")  # no use for the anthropic key
        result = job.run()
    assert result.returncode == 1 and github.pulls == []
    assert "optimisation skipped: no openai_api_key or base_url input" in job.summary.read_text()


def test_a_base_commit_that_cannot_be_had_and_pull_request_target_are_clear_lines(tmp_path, origin):
    with GitHubServer(REPO, token=TOKEN) as github:
        job = Job(tmp_path, origin, github.url, payload=event("1" * 40, origin[2]))
        result = job.run()
        assert result.returncode == 2 and "fetch-depth: 0" in job.summary.read_text()
        job = Job(tmp_path, origin, github.url, event_name="pull_request_target")
        result = job.run()
        assert result.returncode == 2 and "use `on: pull_request`" in job.summary.read_text()
        assert github.calls == []


def test_merge_only_mode_combines_shard_reports_into_one_summary_and_comment(tmp_path, origin):
    # Two shards' reports: the gate run on each half of the suite.
    with GitHubServer(REPO, token=TOKEN) as github:
        shards = []
        for n, k in enumerate(['"first_seen or token"', "large_list"]):
            job = Job(tmp_path / f"shard{n}", origin, github.url, optimize="false", pytest_args=f"-k {k}",
                      fail_on_regression="false")
            assert job.run().returncode == 0, job.result.stdout[-2000:]
            shards.append(job.outputs()["report"])
            if n == 0:  # nothing regressed in this half: quiet, no comment opened
                assert not github.comments.get(7) and int(job.outputs()["regressions"]) == 0
        reports = tmp_path / "reports"
        reports.mkdir()
        for n, path in enumerate(shards):
            (reports / f"shard{n}.json").write_text(open(path).read())
        merge = Job(tmp_path / "merge", origin, github.url, merge_reports=f"{reports}/*.json")
        result = merge.run()
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    merged = json.loads(open(merge.outputs()["report"]).read())
    assert {t["nodeid"].split("::")[1] for t in merged["tests"]} == {
        "test_unique_keeps_first_seen_order", "test_no_github_token_in_reach", "test_unique_on_a_large_list"}
    assert "test_unique_on_a_large_list" in merge.summary.read_text()
    assert len(github.comments[7]) == 1  # the shards wrote theirs; the merge updated the same one


@pytest.mark.parametrize("setup, expected", [
    (dict(optimize="maybe"), "input optimize must be true or false, not 'maybe'"),
    (dict(provider="gpt"), "input provider must be anthropic or openai, not 'gpt'"),
    (dict(provider="openai"), "input model is needed with provider openai: the name its server gives the model"),
    (dict(pytest_args="-k 'unclosed"), "input pytest_args does not parse as a command line"),
    (dict(merge_reports="nowhere/*.json"), "merge_reports matched no file: nowhere/*.json"),
    (dict(payload={"pull_request": {"number": 7}}), "cannot read the pull_request event"),
])
def test_bad_inputs_and_a_bad_event_are_one_line_with_no_call(tmp_path, origin, setup, expected):
    with GitHubServer(REPO, token=TOKEN) as github:
        job = Job(tmp_path, origin, github.url, **setup)
        result = job.run()
        assert github.calls == []
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert expected in job.summary.read_text(), job.summary.read_text()
    lines = [line for line in result.stdout.splitlines() if line.startswith("pytest-soap:")]
    assert len(lines) == 1 and expected in lines[0]
