"""`soap action`: the gate on a pull request, as the GitHub Action runs it.

Everything comes from the environment GitHub gives a step: the action's inputs as INPUT_* variables, the
event's payload at GITHUB_EVENT_PATH, the API at GITHUB_API_URL, the files for the job summary and the step's
outputs. So it runs, and is tested, the same outside GitHub.

The order: decide whether to run at all (not for drafts, the action's own branches or bots); make sure the
base commit is here; read what `soap/<head branch>` already holds (provenance.py); run the gate (`pytest
--soap --soap-against <base sha>`) in a subprocess without the GitHub token in its environment; write the
job summary, the outputs and the annotations; then, only for a pull request from this repository, keep one
sticky comment and, when the loop kept a revision, push one commit per revision to `soap/<head branch>` and
open (or update) one pull request into the head branch. The gate's verdict is the exit status; what fails
after it (a refused call, a rejected push) is one line in the summary.

Through a pull request's life: a run on the head and base the branch was built for runs no loop and pushes
nothing; after a new push, each revision whose target is unchanged is the loop's round 0, and the branch is
never replaced by one that holds fewer of them; the `closed` event closes the optimisation pull request and
deletes its branch.
"""

from __future__ import annotations

import base64
import functools
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from git import GitCommandError, Repo

from ..merge import MergeError, load_report, merge_into
from ..report.markdown import MARKER, before_after_rows, render, table
from ..soap import PROVIDERS, CandidateStatus, OptimizationStatus, Prior, write_priors
from ..worktree import temporary_worktree
from . import provenance
from .api import GitHub, GitHubError
from .provenance import Built

BRANCH_PREFIX = "soap/"
BOT = "pytest-soap[bot]"
BOT_EMAIL = "pytest-soap@users.noreply.github.com"
FORK_NOTE = ("optimisations are not offered on pull requests from forks: GitHub gives them no secrets and a "
             "read-only token. Run `pytest --soap --soap-against <base> --soap-optimize` locally with a key, "
             "or push the branch to this repository.")


class ActionError(Exception):
    """Something that stops the action before a verdict; one line for the summary."""


@dataclass(frozen=True)
class Inputs:
    token: str
    api_key: str  # anthropic_api_key
    optimize: bool
    threshold: str
    pytest_args: list[str]
    model: str
    max_iterations: str
    fail_on_regression: bool
    drafts: bool
    merge_reports: str
    provider: str = "anthropic"
    base_url: str = ""
    openai_api_key: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Inputs:
        def get(name: str, default: str = "") -> str:
            return env.get(f"INPUT_{name.upper()}", "").strip() or default

        def flag(name: str, default: bool) -> bool:
            value = get(name, str(default)).lower()
            if value not in ("true", "false"):
                raise ActionError(f"input {name} must be true or false, not {value!r}")
            return value == "true"

        try:
            pytest_args = shlex.split(get("pytest_args"))
        except ValueError as e:
            raise ActionError(f"input pytest_args does not parse as a command line: {e}") from None
        provider = get("provider", "anthropic")
        if provider not in PROVIDERS:
            raise ActionError(f"input provider must be {' or '.join(PROVIDERS)}, not {provider!r}")
        if provider != PROVIDERS[0] and flag("optimize", True) and not get("model"):
            raise ActionError(f"input model is needed with provider {provider}: the name its server gives the model")
        return cls(token=get("github_token"), api_key=get("anthropic_api_key"), optimize=flag("optimize", True),
                   threshold=get("threshold"), pytest_args=pytest_args, model=get("model"),
                   max_iterations=get("max_iterations"), fail_on_regression=flag("fail_on_regression", True),
                   drafts=flag("run_on_drafts", False), merge_reports=get("merge_reports"), provider=provider,
                   base_url=get("base_url"), openai_api_key=get("openai_api_key"))

    @property
    def model_reachable(self) -> bool:
        """Whether the loop has what its provider needs: a key, or for an OpenAI-compatible server a base URL
        (a self-hosted one may need no key)."""
        if self.provider == "openai":
            return bool(self.openai_api_key or self.base_url)
        return bool(self.api_key)

    @property
    def missing_model(self) -> str:
        """The input to set when model_reachable is False."""
        return "openai_api_key or base_url input" if self.provider == "openai" else "anthropic_api_key input"


@dataclass(frozen=True)
class PullRequest:
    number: int
    head_ref: str
    head_sha: str
    base_ref: str
    base_sha: str
    draft: bool
    fork: bool
    sender: str
    sender_is_bot: bool
    action: str = "synchronize"  # the event's activity: opened, synchronize, closed...
    merged: bool = False

    @classmethod
    def from_event(cls, event: dict) -> PullRequest:
        pr = event["pull_request"]
        head_repo = (pr["head"].get("repo") or {}).get("full_name")
        base_repo = (pr["base"].get("repo") or {}).get("full_name")
        sender = event.get("sender") or {}
        return cls(number=int(pr["number"]), head_ref=pr["head"]["ref"], head_sha=pr["head"]["sha"],
                   base_ref=pr["base"]["ref"], base_sha=pr["base"]["sha"], draft=bool(pr.get("draft")),
                   fork=head_repo != base_repo, sender=sender.get("login", ""),
                   sender_is_bot=sender.get("type") == "Bot" or sender.get("login", "").endswith("[bot]"),
                   action=str(event.get("action") or ""), merged=bool(pr.get("merged")))

    @property
    def soap_branch(self) -> str:
        return BRANCH_PREFIX + self.head_ref


class Step:
    """What the step writes back to GitHub through files: the job summary, its outputs, annotations."""

    def __init__(self, env: dict[str, str]):
        self.summary_path = env.get("GITHUB_STEP_SUMMARY")
        self.output_path = env.get("GITHUB_OUTPUT")
        self.lines: list[str] = []  # one-line notes, for the summary and the comment

    def note(self, line: str) -> None:
        self.lines.append(line)
        print(f"pytest-soap: {line}", flush=True)

    def summary(self, markdown: str) -> None:
        if self.summary_path:
            with open(self.summary_path, "a", encoding="utf-8") as f:
                f.write(markdown + "\n")

    def fail(self, line: str) -> int:
        """Stop before a verdict: the line in the log and the summary, exit 2."""
        self.note(line)
        self.summary(f"{MARKER}\n:x: pytest-soap: {line}")
        return 2

    def outputs(self, **values: str) -> None:
        if self.output_path:
            with open(self.output_path, "a", encoding="utf-8") as f:
                for name, value in values.items():
                    f.write(f"{name}={value}\n")

    @staticmethod
    def annotate(file: str, line: int, title: str, message: str) -> None:
        # Workflow commands: the runner turns these into annotations at the lines of the diff.
        print(f"::warning file={file},line={line},title={title}::{message}", flush=True)


def run(env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    step = Step(env)
    try:
        inputs = Inputs.from_env(env)
        for secret in (inputs.token, inputs.api_key, inputs.openai_api_key):
            if secret:  # the runner hides it in every later line of the log, wherever it came from
                print(f"::add-mask::{secret}", flush=True)
        workspace = Path(env.get("GITHUB_WORKSPACE") or os.getcwd())
        if inputs.merge_reports:
            return merge_only(inputs, env, step, workspace)
        event_name = env.get("GITHUB_EVENT_NAME", "")
        if event_name == "pull_request_target":
            raise ActionError("pull_request_target runs with secrets and a write token: pytest-soap runs the pull "
                              "request's code, so it refuses that event; use `on: pull_request`")
        if event_name != "pull_request":
            step.note(f"nothing to do on a {event_name or 'missing'} event: the gate runs on pull_request")
            step.summary(f"{MARKER}\npytest-soap: nothing to do on a `{event_name}` event.")
            return 0
        pr = read_event(env)
    except ActionError as e:
        return step.fail(str(e))

    if pr.action == "closed":
        return close_down(pr, inputs, env, step)
    skip = skip_reason(pr, inputs)
    if skip:
        step.note(f"skipped: {skip}")
        step.summary(f"{MARKER}\npytest-soap skipped this pull request: {skip}.")
        step.outputs(regressions="0", report="", pr_url="")
        return 0

    try:
        ensure_commit(workspace, pr.base_sha)
    except ActionError as e:
        return step.fail(str(e))

    optimize = inputs.optimize and not pr.fork and inputs.model_reachable
    if inputs.optimize and pr.fork:
        step.note(FORK_NOTE)
    elif inputs.optimize and not inputs.model_reachable:
        step.note(f"optimisation skipped: no {inputs.missing_model}; the gate ran alone")
    report_path = report_path_in(env)
    github = client(inputs, env, step) if not pr.fork else None
    earlier = Earlier.read(workspace, pr, inputs, env, step) if github and optimize else Earlier()
    reuse = earlier.built_for(pr)
    prior = None
    if reuse:
        step.note(f"the loop did not run: {pr.soap_branch} holds {len(earlier.built)} revision"
                  f"{'s' * (len(earlier.built) != 1)} built for this head and base, which stand as they are")
    elif earlier.built:
        prior = report_path.with_suffix(".prior.json")
        write_priors(prior, earlier.priors(step))
    gate_status = run_gate(workspace, pr, inputs, optimize and not reuse, report_path, env, prior)
    try:
        report = load_report(report_path)
    except MergeError:
        step.note(f"the gate wrote no report (pytest exited {gate_status}): see the log above")
        step.summary(f"{MARKER}\n:x: pytest-soap: the gate wrote no report (pytest exited {gate_status}).")
        step.outputs(regressions="0", report="", pr_url="")
        return gate_status or 1

    pr_url = ""
    if github and optimize:
        if reuse:
            report["optimizations"] = [b.as_optimization() for b in earlier.built]
            report_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
        else:
            pr_url = publish(workspace, pr, report, github, inputs, env, step, earlier)
        pr_url = pr_url or (existing_pull(github, pr) if earlier.tip else "")
        step.note(token_line(report))
    annotate(report, step)
    markdown = render(report, pr_url=pr_url or None, notes=step.lines)
    step.summary(markdown)
    step.outputs(regressions=str(len(report.get("regressions", []))), report=str(report_path), pr_url=pr_url)
    if github:
        comment(github, pr.number, markdown, bool(report.get("regressions")), step)
    return exit_status(gate_status, inputs)


@dataclass
class Earlier:
    """What `soap/<head branch>` held when this run started: its tip ("" when there is none, None when it
    could not be read) and the revisions on it."""

    tip: str | None = ""
    built: list[Built] = field(default_factory=list)
    workspace: Path = Path()  # the tree this run gates, where the targets' sources are now

    @classmethod
    def read(cls, workspace: Path, pr: PullRequest, inputs: Inputs, env: dict[str, str], step: Step) -> Earlier:
        auth = dict(env, **token_config(inputs.token))
        listed = git(workspace, "ls-remote", "origin", f"refs/heads/{pr.soap_branch}", env=auth, check=False)
        if listed.returncode != 0:
            step.note(f"{pr.soap_branch} could not be read from origin ({_masked(listed.stderr, inputs)}): "
                      "its revisions are not reused")
            return cls(tip=None)
        if not listed.stdout.strip():
            return cls()
        tip = listed.stdout.split()[0]
        fetched = git(workspace, "fetch", "--no-tags", "--quiet", "origin", f"refs/heads/{pr.soap_branch}",
                      env=auth, check=False)
        if fetched.returncode != 0:
            step.note(f"{pr.soap_branch} could not be fetched from origin ({_masked(fetched.stderr, inputs)}): "
                      "its revisions are not reused")
            return cls(tip=tip)
        if git(workspace, "merge-base", "--is-ancestor", tip, pr.head_sha, check=False).returncode == 0:
            step.note(f"{pr.soap_branch} is merged into this head: its revisions are part of the pull request now")
            return cls(tip=tip)
        return cls(tip, provenance.read_branch(Repo(workspace), tip), workspace)

    def built_for(self, pr: PullRequest) -> bool:
        """Whether every revision was built for this head and base: then there is nothing to do again."""
        return bool(self.built) and all((b.head, b.base) == (pr.head_sha, pr.base_sha) for b in self.built)

    @functools.cached_property
    def unchanged(self) -> list[Built]:
        """The revisions whose target's source is as it was when they were built (computed once a run)."""
        return [b for b in self.built if provenance.source_hash(_read(self.workspace / b.file), b.qualname) == b.source]

    def priors(self, step: Step) -> list[Prior]:
        """The loop's round 0 for each unchanged target: its revision merged into this tree."""
        repo, found = Repo(self.workspace), []
        for b in self.built:
            if b not in self.unchanged:
                step.note(f"{b.key} changed since its revision was built: that revision is not reused")
            elif (merged := provenance.seed(repo, b, _read(self.workspace / b.file))) is None:
                step.note(f"the revision of {b.key} does not merge into this tree: it is not reused")
            else:
                found.append(Prior(b.file, b.qualname, merged, f"commit {b.commit[:12]}", b.tokens))
        return found


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return ""


def _masked(stderr: str, inputs: Inputs) -> str:
    line = last_line(stderr)
    return line.replace(inputs.token, "***") if inputs.token else line


def tokens_used(o: dict) -> int:
    """The model tokens an optimisation's rounds took: input (cached or not) and output."""
    return sum((o.get("tokens") or {}).get(k, 0) for k in ("input", "cache_read", "cache_write", "output"))


def token_line(report: dict) -> str:
    """The model tokens this run used, and those that reusing earlier revisions saved."""
    optimizations = report.get("optimizations") or []
    used = sum(tokens_used(o) for o in optimizations)
    saved = sum((o.get("reused") or {}).get("tokens", 0) for o in optimizations)
    return f"model tokens: {used:,} used by this run; {saved:,} saved by reusing earlier revisions"


def existing_pull(github: GitHub, pr: PullRequest) -> str:
    """The open optimisation pull request's URL, or ""."""
    try:
        pull = github.find_pull(pr.soap_branch, pr.head_ref)
    except GitHubError:
        return ""
    return (pull or {}).get("html_url", "")


def client(inputs: Inputs, env: dict[str, str], step: Step) -> GitHub | None:
    if not inputs.token:
        step.note("no github_token: no comment and no pull request")
        return None
    try:
        return GitHub(env.get("GITHUB_API_URL", "https://api.github.com"), env.get("GITHUB_REPOSITORY", ""), inputs.token)
    except ValueError:
        step.note(f"GITHUB_REPOSITORY is not owner/name ({env.get('GITHUB_REPOSITORY', '')!r}): no comment, no pull request")
        return None


def comment(github: GitHub, number: int, markdown: str, regressed: bool, step: Step) -> None:
    """The sticky comment: quiet when all is well (none is opened), but one opened earlier is updated, so a
    fixed regression does not stay on the pull request."""
    try:
        github.upsert_comment(number, MARKER, markdown, create=regressed)
    except GitHubError as e:
        step.note(f"the pull request comment was not written: {e}")
        step.summary(f"- the pull request comment was not written: {e}")


def read_event(env: dict[str, str]) -> PullRequest:
    try:
        return PullRequest.from_event(json.loads(Path(env["GITHUB_EVENT_PATH"]).read_text(encoding="utf-8")))
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise ActionError(f"cannot read the pull_request event (GITHUB_EVENT_PATH): {e!r}") from None


def report_path_in(env: dict[str, str]) -> Path:
    """A report file of this run's own: under the job's RUNNER_TEMP, else in a new temporary folder, never a
    fixed name that two jobs on one self-hosted machine would share."""
    folder = env.get("RUNNER_TEMP") or tempfile.mkdtemp(prefix="pytest-soap-")
    Path(folder).mkdir(parents=True, exist_ok=True)
    handle, path = tempfile.mkstemp(prefix="pytest-soap-report-", suffix=".json", dir=folder)
    os.close(handle)
    return Path(path)


def skip_reason(pr: PullRequest, inputs: Inputs) -> str | None:
    if pr.head_ref.startswith(BRANCH_PREFIX):
        return f"{pr.head_ref} is one of pytest-soap's own branches"
    if pr.sender_is_bot:
        return f"opened by a bot ({pr.sender})"
    if pr.draft and not inputs.drafts:
        return "a draft (set run_on_drafts: true to gate drafts)"
    return None


def git(workspace: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], cwd=workspace, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ActionError(f"git {args[0]} failed: {last_line(result.stderr)}")
    return result


def last_line(output: str) -> str:
    return (output.strip().splitlines() or ["no output"])[-1].strip()


def ensure_commit(workspace: Path, sha: str) -> None:
    """The base commit, fetched from origin if this clone lacks it (actions/checkout's default depth is 1)."""
    if git(workspace, "cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0:
        return
    fetched = git(workspace, "fetch", "--no-tags", "--quiet", "origin", sha, check=False)
    if fetched.returncode != 0 or git(workspace, "cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode != 0:
        raise ActionError(f"the base commit {sha[:12]} is not in this clone and could not be fetched from origin; "
                          "check out with `fetch-depth: 0` in actions/checkout")


def run_gate(workspace: Path, pr: PullRequest, inputs: Inputs, optimize: bool, report: Path, env: dict[str, str],
             prior: Path | None = None) -> int:
    """pytest with the gate, in the project's environment; the GitHub token never reaches it, and the model's
    key only when the loop runs (its sandbox keeps the key from the model's code). `prior`: the earlier
    revisions the loop starts from."""
    args = [sys.executable, "-m", "pytest", *inputs.pytest_args, "--soap", f"--soap-against={pr.base_sha}",
            f"--soap-json={report}"]
    if inputs.threshold:
        args.append(f"--soap-threshold={inputs.threshold}")
    if optimize:
        args.append("--soap-optimize")
        args += [f"--soap-model={inputs.model}"] * bool(inputs.model)
        args += [f"--soap-iterations={inputs.max_iterations}"] * bool(inputs.max_iterations)
        args.append(f"--soap-provider={inputs.provider}")
        args += [f"--soap-base-url={inputs.base_url}"] * bool(inputs.base_url)
        args += [f"--soap-prior={prior}"] * bool(prior)
    gate_env = {k: v for k, v in env.items()
                if not k.startswith("INPUT_") and k not in ("GITHUB_TOKEN", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    # The chosen provider's key alone; none for a self-hosted server that asks for none.
    if optimize and inputs.provider == "openai" and inputs.openai_api_key:
        gate_env["OPENAI_API_KEY"] = inputs.openai_api_key
    elif optimize and inputs.provider == "anthropic":
        gate_env["ANTHROPIC_API_KEY"] = inputs.api_key
    print("$ " + " ".join(args[1:]), flush=True)
    report.unlink(missing_ok=True)
    return subprocess.run(args, cwd=workspace, env=gate_env).returncode


def exit_status(gate_status: int, inputs: Inputs) -> int:
    """The gate's: 1 on a regression (or failing tests) when fail_on_regression; a usage error stays one."""
    if gate_status in (0, 1):
        return gate_status if inputs.fail_on_regression else 0
    return gate_status


def annotate(report: dict, step: Step) -> None:
    """A warning at each function blamed first for a regressed test."""
    regressed = set(report.get("regressions", []))
    for entry in report.get("functions", []):
        tests = [t for t in entry["tests"] if t in regressed and entry["evidence"][t]["rank"] == 1]
        if tests:
            what = "changed in this pull request" if entry.get("changed") else "not changed here"
            step.annotate(entry["file"], entry["lineno"], "pytest-soap: performance regression",
                          f"{entry['qualname']} ({what}) is blamed for the regression of {', '.join(tests)}")


def publish(workspace: Path, pr: PullRequest, report: dict, github: GitHub, inputs: Inputs, env: dict[str, str],
            step: Step, earlier: Earlier) -> str:
    """Push this run's revisions and open or update their pull request, unless that would lose one the branch
    holds: a revision whose target is unchanged that this run did not keep again (its regression was not
    found, or its revision did not merge) keeps the branch as it is. A revision that failed its re-verification
    on this tree is dropped, and said. The pull request's URL, or "" when nothing was pushed."""
    optimizations = report.get("optimizations") or []
    kept = {f"{o['file']}::{o['qualname']}" for o in optimizations if o.get("status") == OptimizationStatus.ACCEPTED}
    failed = {f"{o['file']}::{o['qualname']}": o["candidates"][0] for o in optimizations
              if o.get("candidates") and o["candidates"][0].get("iteration") == 0
              and o["candidates"][0].get("status") != CandidateStatus.ACCEPTED}
    lost = []
    for b in earlier.unchanged:
        if b.key in failed:
            fate = "this run's revision replaces it" if b.key in kept else "it is dropped"
            step.note(f"the revision of {b.key} on {pr.soap_branch} fails on this head ({failed[b.key]['status']}: "
                      f"{failed[b.key].get('reason', '')}): {fate}")
        elif b.key not in kept:
            lost.append(b.key)
    if lost:
        step.note(f"{pr.soap_branch} is left as it is: it holds revisions this run did not keep again "
                  f"({', '.join(lost)}), and pushing would lose them")
        return ""
    if not kept or not report.get("patch"):
        return ""
    return open_optimisation_pr(workspace, pr, report, github, inputs, env, step, earlier.tip)


def open_optimisation_pr(workspace: Path, pr: PullRequest, report: dict, github: GitHub, inputs: Inputs,
                         env: dict[str, str], step: Step, lease: str | None = None) -> str:
    """Commit each kept revision on soap/<head branch> (from the head commit, in a worktree of its own), its
    provenance in the commit's trailers, push it with the token in git's environment (never in argv or a URL),
    and open or update one pull request into the head branch. The push is refused if the branch moved since
    it was read (`lease`, its tip then; read now when unknown): another run got there first. The pull
    request's URL, or "" when a step failed (said in the summary)."""
    accepted = [o for o in report["optimizations"] if o.get("status") == OptimizationStatus.ACCEPTED]
    push_env = dict(env, **token_config(inputs.token))
    try:
        with temporary_worktree(workspace, pr.head_sha, "soap-branch-") as tree:
            for o in accepted:
                commit_revision(tree, workspace, pr, o)
            if lease is None:
                remote = git(workspace, "ls-remote", "origin", f"refs/heads/{pr.soap_branch}", env=push_env, check=False)
                lease = remote.stdout.split()[0] if remote.returncode == 0 and remote.stdout.strip() else ""
            pushed = git(tree, "push", "--quiet", f"--force-with-lease=refs/heads/{pr.soap_branch}:{lease}",
                         "origin", f"HEAD:refs/heads/{pr.soap_branch}", env=push_env, check=False)
    except ActionError as e:
        step.note(f"the optimised code was not committed: {e}")
        return ""
    except GitCommandError as e:
        step.note(f"the optimised code was not committed: git worktree failed: {last_line(str(e.stderr))}")
        return ""
    if pushed.returncode != 0:
        if "stale info" in pushed.stderr:
            step.note(f"{pr.soap_branch} was not updated: another run pushed to it while this one ran; "
                      "its pull request stands as that run left it")
        else:
            step.note(f"the optimised code was not pushed to {pr.soap_branch}: git push was rejected "
                      f"({_masked(pushed.stderr, inputs)})")
        return ""
    try:
        pull = github.upsert_pull(pr.soap_branch, pr.head_ref, f"pytest-soap: faster {', '.join(o['qualname'] for o in accepted)}",
                                  pull_body(pr, report, accepted))
    except GitHubError as e:
        step.note(f"the optimisation pull request was not opened: {e}")
        return ""
    return pull.get("html_url", "")


def commit_revision(tree: Path, workspace: Path, pr: PullRequest, o: dict) -> None:
    """One revision as one commit: its own diff, and trailers saying what it was built from (provenance.py)."""
    diff = tree / ".git-soap-revision.patch"
    diff.write_text(o["diff"], encoding="utf-8")
    try:
        git(tree, "apply", "--index", str(diff))
    finally:
        diff.unlink()
    source = provenance.source_hash(_read(workspace / o["file"]), o["qualname"]) or "unknown"
    tokens = tokens_used(o) + (o.get("reused") or {}).get("tokens", 0)
    message = provenance.message(o, source, pr.head_sha, pr.base_sha, tokens)
    git(tree, "-c", f"user.name={BOT}", "-c", f"user.email={BOT_EMAIL}", "commit", "--quiet", "-m", message)


def token_config(token: str) -> dict[str, str]:
    """git configuration through the environment (GIT_CONFIG_*): the token as an HTTP header for GitHub, so it
    is in no command line and no remote URL."""
    if not token:
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraheader",
            "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}", "GIT_TERMINAL_PROMPT": "0"}


def pull_body(pr: PullRequest, report: dict, accepted: list[dict]) -> str:
    rows = [[f"`{o['file']}::{o['qualname']}`", *row] for o in accepted for row in before_after_rows(o)]
    lines = [MARKER, f"pytest-soap found a performance regression in #{pr.number} and optimised the functions to "
             "blame. Each revision passed the tests that exercise it, behaved as the original on the calls those tests "
             "made (checked on copies of their arguments where the calls happened), and was measurably cheaper on "
             "the regressed tests in a sandboxed race. Before this patch was written, the tests of every revision ran "
             "once more with the whole patch in one tree, behind the sandbox's wall, which stops anything the "
             "original's tests never do (network, writes outside, new programs or threads); see the verification "
             "below.", "",
             table(["function", "metric", "before", "after", "ratio"], rows)]
    lines += ["", "Before and after: one run of the regressed tests, the median of the race's samples; the "
              "revision was kept on the race's statistics (Mann-Whitney U over alternating timed runs).",
              "", "**Verification**", ""]
    for o in accepted:
        rounds = o.get("candidates", [])
        kept = sum(c.get("status") == CandidateStatus.ACCEPTED for c in rounds)
        lines.append(f"- `{o['qualname']}`: {len(rounds)} round{'s' * (len(rounds) != 1)}, {kept} accepted; tests run: "
                     f"{', '.join(o.get('tests', [])) or 'the project suite'}")
        if o.get("reused"):
            lines.append(f"  - reused: the revision of {o['reused']['from']} (an earlier run on this pull request), "
                         "re-verified on this head as round 0")
        for key in ("behaviour", "final_check", "sandbox"):
            if o.get(key):
                lines.append(f"  - {key.replace('_', ' ')}: {o[key]}")
        for c in rounds:
            lines.append(f"  - round {c.get('iteration')}: {c.get('status')}: {c.get('reason') or ''}".rstrip(": "))
    lines += ["", "**How to apply**: merge this pull request into "
              f"`{pr.head_ref}`, or `git fetch origin {pr.soap_branch} && git merge origin/{pr.soap_branch}`. "
              "pytest-soap updates this pull request on later pushes."]
    return "\n".join(lines)


def close_down(pr: PullRequest, inputs: Inputs, env: dict[str, str], step: Step) -> int:
    """The pull request was closed or merged: close its optimisation pull request, with a word why, and delete
    soap/<head branch>. Nothing to do for pytest-soap's own branches and for forks (no write token)."""
    what = "merged" if pr.merged else "closed"
    github = None
    if pr.head_ref.startswith(BRANCH_PREFIX) or pr.fork:
        step.note(f"nothing to tidy up: #{pr.number} has no optimisation branch of its own here")
    else:
        github = client(inputs, env, step)
    if github is None:
        step.summary(f"{MARKER}\npytest-soap: #{pr.number} was {what}; nothing to tidy up.")
        return 0
    try:
        pull = github.find_pull(pr.soap_branch, pr.head_ref)
        if pull:
            github.comment(pull["number"], f"{MARKER}\n#{pr.number} was {what}, so this pull request into its branch "
                                           "is closed too, and its branch deleted.")
            github.close_pull(pull["number"])
            step.note(f"closed the optimisation pull request #{pull['number']}")
        if github.delete_branch(pr.soap_branch):
            step.note(f"deleted {pr.soap_branch}")
    except GitHubError as e:
        return step.fail(f"the optimisation pull request of #{pr.number} was not tidied up: {e}")
    if not step.lines:
        step.note(f"#{pr.number} has no optimisation pull request or branch to tidy up")
    step.summary(f"{MARKER}\npytest-soap: #{pr.number} was {what}.\n\n" + "\n".join(f"- {line}" for line in step.lines))
    step.outputs(regressions="0", report="", pr_url="")
    return 0


def merge_only(inputs: Inputs, env: dict[str, str], step: Step, workspace: Path) -> int:
    """Merge-only mode: combine the JSON reports of sharded runs, then summary, outputs and comment."""
    paths = sorted({Path(p) for pattern in inputs.merge_reports.split() for p in glob.glob(pattern, root_dir=workspace)})
    paths = [p if p.is_absolute() else workspace / p for p in paths]
    if not paths:
        raise ActionError(f"merge_reports matched no file: {inputs.merge_reports}")
    out = report_path_in(env)
    try:
        report = merge_into(out, paths)  # refuses when a pattern matched the merged report's own path
    except MergeError as e:
        raise ActionError(str(e)) from None
    annotate(report, step)
    markdown = render(report, notes=step.lines)
    step.summary(markdown)
    step.outputs(regressions=str(len(report.get("regressions", []))), report=str(out), pr_url="")
    if env.get("GITHUB_EVENT_NAME") == "pull_request" and env.get("GITHUB_EVENT_PATH"):
        pr = read_event(env)
        github = client(inputs, env, step) if not pr.fork else None
        if github:
            comment(github, pr.number, markdown, bool(report.get("regressions")), step)
    regressed = bool(report.get("regressions"))
    return 1 if regressed and inputs.fail_on_regression else 0
