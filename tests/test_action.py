"""`soap action` end to end, as GitHub runs it: a pull request's event payload, a local bare repository as
`origin`, a loopback GitHub REST API recording every call, and the loopback Messages API for the model."""

import json
import os
import re
import subprocess
import sys
import time

import git
import pytest

from pytest_soap.report.markdown import MARKER
from pytest_soap.soap.loopback import ChatCompletionsServer, Choose, Forever, MessagesServer

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


@pytest.fixture
def origin(tmp_path_factory):
    """A bare `origin` with `main`, and `feature`: a pull request's branch that slows `unique` down. Each test
    has its own: what one run pushes to `soap/feature` is what the next run on the pull request starts from."""
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


def event(base_sha, head_sha, *, head_ref="feature", fork=False, draft=False, sender=("dev", "User"),
          action="synchronize", merged=False):
    return {"action": action, "number": 7, "sender": {"login": sender[0], "type": sender[1]},
            "pull_request": {"number": 7, "draft": draft, "merged": merged,
                             "head": {"ref": head_ref, "sha": head_sha,
                                      "repo": {"full_name": "someone/shop" if fork else REPO}},
                             "base": {"ref": "main", "sha": base_sha, "repo": {"full_name": REPO}}}}


class Job:
    """One GitHub job's files and environment, around a fresh clone of origin at the pull request's head."""

    def __init__(self, tmp_path, origin, github_url, messages_url=None, payload=None, event_name="pull_request",
                 shallow=False, **inputs):
        bare, base_sha, head_sha = origin
        payload = payload or event(base_sha, head_sha)
        head_sha = payload.get("pull_request", {}).get("head", {}).get("sha", head_sha)  # the commit the event names
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
        event_path.write_text(json.dumps(payload))
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("GITHUB_", "INPUT_", "ANTHROPIC_", "OPENAI_", "PYTEST_")) and k != "CI"}
        self.env.update(CI="true", GITHUB_EVENT_NAME=event_name, GITHUB_EVENT_PATH=str(event_path),
                        GITHUB_REPOSITORY=REPO, GITHUB_API_URL=github_url, GITHUB_WORKSPACE=str(self.workspace),
                        GITHUB_STEP_SUMMARY=str(self.summary), GITHUB_OUTPUT=str(self.output),
                        RUNNER_TEMP=str(tmp_path / "runner"), INPUT_GITHUB_TOKEN=TOKEN, INPUT_ANTHROPIC_API_KEY=KEY,
                        INPUT_MAX_ITERATIONS="1")
        self.env.pop("TMPDIR", None)
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


def push(origin, tmp_path, work: str | None = None, **files: str) -> str:
    """A new push to `feature`: pkg/work.py becomes `work` (when given) and each of `files` is written; the new head."""
    clone = git.Repo.clone_from(str(origin[0]), tmp_path, branch="feature")
    if work is not None:
        (tmp_path / "pkg" / "work.py").write_text(work)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    clone.git.add("--all")
    head = clone.index.commit("another push", author=ACTOR, committer=ACTOR)
    clone.remotes.origin.push("feature")
    return head.hexsha


def soap_commits(bare) -> list[git.Commit]:
    """The commits on soap/feature that pytest-soap made, newest first."""
    return [c for c in git.Repo(bare).iter_commits("soap/feature", first_parent=True) if "Soap-Target" in c.trailers_dict]


WRONG = "Shorter:\n\n```python\ndef unique(items):\n    return sorted(set(items))\n```\n"


def test_through_a_pull_requests_life_no_work_is_done_twice_and_no_revision_is_lost(tmp_path, origin):
    bare, base, head = origin
    with GitHubServer(REPO, token=TOKEN, origin=bare) as github:
        # The first push: the gate fails, the loop keeps a revision, one commit carries what it was built from.
        with MessagesServer([Forever(FAST)]) as model:
            job = Job(tmp_path / "run1", origin, github.url, model.url)
            first = job.run()
        assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
        outputs = job.outputs()
        assert int(outputs["regressions"]) >= 1 and outputs["pr_url"] and outputs["report"].endswith(".json")
        assert outputs["report"].startswith(str(tmp_path / "run1" / "runner"))  # the job's own RUNNER_TEMP
        # Every test passed, the one that looks for the GitHub token in its environment included.
        assert {t["outcome"] for t in json.loads(open(outputs["report"]).read())["tests"]} == {"passed"}
        summary = job.summary.read_text()
        assert "tests/test_work.py::test_unique_on_a_large_list" in summary and "xychart-beta" in summary
        assert "::warning file=pkg/work.py,line=1," in first.stdout  # an annotation at the function to blame
        used = int(re.search(r"model tokens: ([\d,]+) used by this run; 0 saved", summary)[1].replace(",", ""))
        assert used > 0
        [built] = soap_commits(bare)
        trailers = {k: v[-1] for k, v in built.trailers_dict.items()}
        assert trailers["Soap-Target"] == "pkg/work.py::unique" and built.parents[0].hexsha == head
        assert (trailers["Soap-Head"], trailers["Soap-Base"]) == (head, base) and trailers["Soap-Source"].startswith("sha256:")
        assert int(trailers["Soap-Tokens"]) == used
        body = github.pulls[0]["body"]
        assert "| before | after |" in body and "accepted" in body and "How to apply" in body
        assert "  - final check: passed: its covering tests ran again with the revision in the tree, behind the " \
               "sandbox's wall" in body and "  - sandbox: an audit hook stops anything" in body
        assert TOKEN not in job.printed() and KEY not in job.printed()
        pushed, pull = branches(bare)["soap/feature"], dict(github.pulls[0])

        # A re-run on the same head and base: no model request, no push, the pull request as it was; the comment
        # and the summary say what stands, and what it saved.
        with MessagesServer([Forever(WRONG)]) as model:
            job = Job(tmp_path / "run2", origin, github.url, model.url)
            writes = len(github.writes)
            second = job.run()
            assert model.requests == []
        assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]
        assert branches(bare)["soap/feature"] == pushed and github.pulls == [pull]
        assert [(c.method, c.path.split("/")[-2]) for c in github.writes[writes:]] == [("PATCH", "comments")]
        summary = job.summary.read_text()
        assert f"model tokens: 0 used by this run; {used:,} saved" in summary and "the loop did not run" in summary
        assert "Reused: the revision of commit " in summary and "built for this head and base, not run again" in summary
        assert job.outputs()["pr_url"] == outputs["pr_url"] and int(job.outputs()["regressions"]) >= 1
        [sticky] = github.comments[7]  # the one comment, updated
        assert sticky["body"].startswith(MARKER) and "built for this head and base, not run again" in sticky["body"]

        # A push that leaves unique as it was: the earlier revision is round 0, and survives worse replies.
        head2 = push(origin, tmp_path / "push2", **{"NOTES.md": "notes\n"})
        with MessagesServer([Forever(WRONG)]) as model:
            job = Job(tmp_path / "run3", origin, github.url, model.url, payload=event(base, head2))
            third = job.run()
            assert len(model.requests) == 1
        assert third.returncode == 1, third.stdout[-3000:] + third.stderr[-3000:]
        [again] = soap_commits(bare)
        assert again.parents[0].hexsha == head2 and "dict.fromkeys" in again.tree["pkg/work.py"].data_stream.read().decode()
        report = json.loads(open(job.outputs()["report"]).read())
        [o] = report["optimizations"]
        assert [(c["iteration"], c["status"]) for c in o["candidates"]] == [(0, "accepted"), (1, "rejected")]
        assert o["reused"] == {"from": f"commit {built.hexsha[:12]}", "tokens": used}
        summary = job.summary.read_text()
        assert "saved by reusing earlier revisions" in summary and f"{used:,} saved" in summary
        assert "re-verified on this tree as round 0" in summary and "reused: the revision of commit" in github.pulls[0]["body"]
        assert int({k: v[-1] for k, v in again.trailers_dict.items()}["Soap-Tokens"]) > used  # what it cost, all told

        # A push that changes unique: it is optimised anew, from no earlier revision.
        head3 = push(origin, tmp_path / "push3", ORIGINAL.replace("if item not in seen:", "if item not in sorted(seen, reverse=True):"))
        with MessagesServer([Forever(FAST)]) as model:
            job = Job(tmp_path / "run4", origin, github.url, model.url, payload=event(base, head3))
            fourth = job.run()
        assert fourth.returncode == 1, fourth.stdout[-3000:] + fourth.stderr[-3000:]
        [o] = json.loads(open(job.outputs()["report"]).read())["optimizations"]
        assert [(c["iteration"], c["status"]) for c in o["candidates"]] == [(1, "accepted")] and not o["reused"]
        assert "pkg/work.py::unique changed since its revision was built: that revision is not reused" in job.summary.read_text()
        [anew] = soap_commits(bare)
        assert anew.parents[0].hexsha == head3
        assert anew.trailers_dict["Soap-Source"] != built.trailers_dict["Soap-Source"]
        assert [(p["head"]["ref"], p["base"]["ref"], p["state"]) for p in github.pulls] == [("soap/feature", "feature", "open")]

        # The optimisation is merged into the pull request: the next run finds its revision in the head, reuses
        # nothing, loses nothing, and asks no model (unique is fast now).
        clone = git.Repo.clone_from(str(bare), tmp_path / "push4", branch="feature")
        clone.git.merge("origin/soap/feature")
        clone.remotes.origin.push("feature")
        head4 = clone.head.commit.hexsha
        with MessagesServer([Forever(WRONG)]) as model:
            job = Job(tmp_path / "run5", origin, github.url, model.url, payload=event(base, head4))
            fifth = job.run()
            assert model.requests == []
        assert fifth.returncode == 0, fifth.stdout[-3000:] + fifth.stderr[-3000:]
        assert "soap/feature is merged into this head: its revisions are part of the pull request now" in job.summary.read_text()
        assert branches(bare)["soap/feature"] == anew.hexsha

        # The pull request is merged: its optimisation pull request is closed with a word why, its branch deleted.
        job = Job(tmp_path / "run6", origin, github.url, payload=event(base, head4, action="closed", merged=True))
        closed = job.run()
        assert closed.returncode == 0, closed.stdout[-3000:] + closed.stderr[-3000:]
        assert github.pulls[0]["state"] == "closed" and "soap/feature" not in branches(bare)
        number = github.pulls[0]["number"]
        assert "#7 was merged, so this pull request into its branch is closed too" in github.comments[number][-1]["body"]
        assert "deleted soap/feature" in job.summary.read_text()
    # The pull request's branch holds the faster code now, and its tests pass.
    git.Repo.clone_from(str(bare), tmp_path / "check", branch="feature")
    assert "dict.fromkeys" in (tmp_path / "check" / "pkg" / "work.py").read_text()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=tmp_path / "check", capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout


def test_a_push_that_loses_the_race_to_another_run_is_one_line_and_the_verdict_stands(tmp_path, origin):
    bare, _, head = origin

    def another_run_pushes_first(request):
        # While this run asks the model, another run of the same pull request pushes soap/feature.
        subprocess.run(["git", "update-ref", "refs/heads/soap/feature", head], cwd=bare, check=True)
        return FAST

    with GitHubServer(REPO, token=TOKEN, origin=bare) as github, MessagesServer([Choose(another_run_pushes_first)]) as model:
        job = Job(tmp_path, origin, github.url, model.url)
        result = job.run()
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in job.summary.read_text().splitlines() if "another run pushed to it" in line]
    assert len(lines) == 1 and "soap/feature was not updated" in lines[0]
    assert branches(bare)["soap/feature"] == head and github.pulls == []


def test_a_closed_pull_request_without_an_optimisation_branch_needs_nothing_and_a_refusal_is_one_line(tmp_path, origin):
    bare, base, head = origin
    with GitHubServer(REPO, token=TOKEN, origin=bare) as github:
        job = Job(tmp_path / "quiet", origin, github.url, payload=event(base, head, action="closed"))
        assert job.run().returncode == 0
        assert "has no optimisation pull request or branch to tidy up" in job.summary.read_text()
        assert [c.method for c in github.writes] == ["DELETE"]
        github.add_pull("soap/feature", "feature")
        github.fail("PATCH", f"/repos/{REPO}/pulls/", 403, "Resource not accessible by integration")
        job = Job(tmp_path / "refused", origin, github.url, payload=event(base, head, action="closed"))
        result = job.run()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("pytest-soap:")]
    assert len(lines) == 1 and "was not tidied up" in lines[0] and "403" in lines[0], result.stdout


def test_each_job_has_a_report_file_of_its_own():
    from pytest_soap.github.action import report_path_in

    first, second = report_path_in({}), report_path_in({})
    assert first != second and first.parent != second.parent
    assert first.name != "pytest-soap-report.json" and first.parent.name.startswith("pytest-soap-")


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
    # A reply without code: the loop runs and keeps nothing, so no branch is pushed.
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
