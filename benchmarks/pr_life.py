"""`soap action` through a pull request's life, on real code: a real speed fix reverted in its released sdist
(benchmarks/real_cases, as real_loop.py builds it) is the pull request; GitHub is the loopback fake of
tests/github_server.py with a local bare repository as `origin`; the model is the loopback Messages API.

Five events, each a fresh clone and a `soap action` process, as a runner would have them:

1. the pull request is opened: the gate fails, the model answers with the project's own fix, the branch
   soap/feature and its pull request are made;
2. the job is re-run on the same head and base, and the model would now answer with a wrong revision;
3. a push that leaves the target alone (a line in the changelog), the model still answering wrongly;
4. a push that changes the target (a comment inside it), the model answering with the fix again;
5. the pull request is merged (the `closed` event).

One row an event: the exit status, the wall time, the model requests, the tokens used and saved (from the
summary), what the branch holds and whose head it sits on, and the optimisation pull request's state. Then
what a run without reuse would have cost, measured: the same re-run with soap/feature deleted first.

    python benchmarks/pr_life.py [--case sqlparse-group-value] [--iterations 2] [--keep]

Figures are from one run; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import pkg_version
from real_loop import CASES, Model, _find, ensure_needs, fix_code, hostile_replies, make_repo, sh

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the loopback GitHub
REPO = "octo/project"
TOKEN = "ghs_benchtoken0123456789"
TOKENS = re.compile(r"model tokens: ([\d,]+) used by this run; ([\d,]+) saved")


def bare_origin(case, work: Path) -> tuple[Path, Path, str, str]:
    """The fixed release as `main`, the revert as `feature`, in a bare `origin`; a working clone to push from."""
    repo = make_repo(case, work)
    bare = work / "origin.git"
    sh(["git", "init", "-q", "--bare", str(bare)], work)
    sh(["git", "push", "-q", str(bare), "fixed:refs/heads/main", "HEAD:refs/heads/feature"], repo)
    base = sh(["git", "rev-parse", "fixed^{commit}"], repo).stdout.strip()
    head = sh(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    return bare, repo, base, head


def push(repo: Path, bare: Path, path: str, edit) -> str:
    """A commit on `feature` that rewrites `path` with `edit`, pushed; the new head."""
    file = repo / path
    file.write_text(edit(file.read_text(encoding="utf-8")), encoding="utf-8")
    sh(["git", "commit", "-q", "--no-verify", "-am", f"edit {path}"], repo)
    sh(["git", "push", "-q", "-f", str(bare), "HEAD:refs/heads/feature"], repo)
    return sh(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def touch(source: str, qualname: str) -> str:
    """`source` with a comment line first in the body of `qualname`: the target's source changes, not what it does."""
    node = _find(ast.parse(source), qualname)
    first = node.body[0]
    lines = source.splitlines(keepends=True)
    lines.insert(first.lineno - 1, " " * first.col_offset + "# touched by the pull request\n")
    return "".join(lines)


def payload(base: str, head: str, action: str = "synchronize") -> dict:
    return {"action": action, "number": 7, "sender": {"login": "dev", "type": "User"},
            "pull_request": {"number": 7, "draft": False, "merged": action == "closed",
                             "head": {"ref": "feature", "sha": head, "repo": {"full_name": REPO}},
                             "base": {"ref": "main", "sha": base, "repo": {"full_name": REPO}}}}


def action(work: Path, name: str, bare: Path, event: dict, github_url: str, model_url: str, case,
           iterations: int) -> dict:
    """One job: a fresh clone at the event's head, `soap action`, and what it left."""
    job = work / name
    job.mkdir()
    workspace = job / "workspace"
    sh(["git", "clone", "-q", str(bare), str(workspace)], job)
    sh(["git", "checkout", "-q", "--detach", event["pull_request"]["head"]["sha"]], workspace)
    (job / "event.json").write_text(json.dumps(event))
    (job / "runner").mkdir()
    summary, output = job / "summary.md", job / "output.txt"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "INPUT_", "ANTHROPIC_", "PYTEST_")) and k != "CI"}
    env.update(CI="true", GITHUB_EVENT_NAME="pull_request", GITHUB_EVENT_PATH=str(job / "event.json"),
               GITHUB_REPOSITORY=REPO, GITHUB_API_URL=github_url, GITHUB_WORKSPACE=str(workspace),
               GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(output), RUNNER_TEMP=str(job / "runner"),
               INPUT_GITHUB_TOKEN=TOKEN, INPUT_ANTHROPIC_API_KEY="sk-bench", ANTHROPIC_BASE_URL=model_url,
               INPUT_MAX_ITERATIONS=str(iterations), INPUT_PYTEST_ARGS=shlex.join(case.tests))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest_soap.cli", "action"], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    text = summary.read_text() if summary.exists() else ""
    tokens = TOKENS.search(text)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line) if output.exists() else {}
    report = {}
    if outputs.get("report") and Path(outputs["report"]).exists():
        report = json.loads(Path(outputs["report"]).read_text())
    rounds = [f"{c['iteration']}:{c['status']}" for o in report.get("optimizations", []) for c in o.get("candidates", [])]
    return {"rc": proc.returncode, "wall": wall, "used": tokens[1] if tokens else "-",
            "saved": tokens[2] if tokens else "-", "rounds": " ".join(rounds) or "-",
            "notes": [line[2:] for line in text.splitlines() if line.startswith("- ") and "pytest-soap" not in line],
            "stderr": proc.stderr[-600:]}


def branch(bare: Path) -> tuple[str, list[str], str]:
    """soap/feature's tip, the targets of pytest-soap's commits on it (oldest first), and the commit they sit on."""
    import git

    try:
        tip = git.Repo(bare).commit("refs/heads/soap/feature")
    except (git.BadName, ValueError):
        return "", [], ""
    targets, commit = [], tip
    while "Soap-Target" in commit.trailers_dict and commit.parents:
        targets.append(commit.trailers_dict["Soap-Target"][-1])
        commit = commit.parents[0]
    return tip.hexsha, targets[::-1], commit.hexsha


def main() -> int:
    parser = argparse.ArgumentParser(description="soap action through a pull request's life (see the docstring)")
    parser.add_argument("--case", default="sqlparse-group-value", help="a case of real_loop.py (default sqlparse-group-value)")
    parser.add_argument("--iterations", type=int, default=2, help="rounds of the loop per target (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repositories")
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pytest_soap.soap.loopback import Choose, Forever, MessagesServer

    from github_server import GitHubServer

    case = next((c for c in CASES if c.key == opts.case), None)
    if case is None:
        parser.error(f"unknown case; the cases: {', '.join(c.key for c in CASES)}")
    ensure_needs(case)
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}, pytest {pkg_version('pytest')}, pytest-soap {pkg_version('pytest-soap')}, "
          f"git HEAD {sh(['git', 'rev-parse', '--short', 'HEAD'], ROOT).stdout.strip()}")
    print(f"case: {case.key} ({case.project} {case.version}, the revert of {case.commit[:9]}); target file {case.file}; "
          f"{opts.iterations} rounds at most\n")
    work = Path(tempfile.mkdtemp(prefix="soap-pr-life-"))
    started = time.perf_counter()
    rows = []
    try:
        bare, repo, base, head = bare_origin(case, work)
        fixed = fix_code(sh(["git", "show", f"fixed:{case.file}"], repo).stdout, case.fix)
        wrong = hostile_replies(case, fixed, work / "never-written.txt")

        head2 = head3 = ""

        def step(name: str, event: dict, model: Model) -> None:
            print(f"[{time.perf_counter() - started:6.1f}s] {name} ...", file=sys.stderr, flush=True)
            with MessagesServer([Forever(Choose(model))]) as server:
                row = action(work, name.split()[0], bare, event, github.url, server.url, case, opts.iterations)
                row["requests"] = len(server.requests)
            tip, targets, parent = branch(bare)
            pulls = [p["state"] for p in github.pulls]
            on = {head: "head1", head2: "head2", head3: "head3"}.get(parent, parent[:9] or "-") if parent else "-"
            row.update(name=name, tip=tip[:9] or "-", targets=", ".join(targets) or "-", on=on,
                       pull=", ".join(pulls) or "-", body=github.pulls[0]["body"] if github.pulls else "")
            rows.append(row)

        with GitHubServer(REPO, token=TOKEN, origin=bare) as github:
            step("1-opened: the fix", payload(base, head), Model(fixed))
            body = rows[-1]["body"]
            step("2-rerun: same head, wrong replies", payload(base, head), Model(fixed, wrong, ["wrong"]))
            rows[-1]["body_same"] = rows[-1]["body"] == body
            head2 = push(repo, bare, "CHANGELOG", lambda text: "Unreleased\n\n* A line.\n\n" + text)
            step("3-push: target unchanged, wrong replies", payload(base, head2), Model(fixed, wrong, ["wrong"]))
            head3 = push(repo, bare, case.file, lambda text: touch(text, case.fix[0]))
            step("4-push: target changed, the fix", payload(base, head3), Model(fixed))
            step("5-closed: merged", payload(base, head3, "closed"), Model(fixed))
            # What the re-run would have cost without reuse: the branch gone, the same head, the fix again.
            sh(["git", "update-ref", "-d", "refs/heads/soap/feature"], bare)
            github.pulls.clear()
            step("6-rerun without reuse", payload(base, head3), Model(fixed))
    finally:
        if opts.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"{'event':<42}{'exit':>5}{'wall':>8}{'asked':>6}{'used':>9}{'saved':>9}  {'rounds':<34}{'branch':<11}"
          f"{'on':<11}{'pull':<8}")
    for r in rows:
        print(f"{r['name']:<42}{r['rc']:>5}{r['wall']:>7.1f}s{r['requests']:>6}{r['used']:>9}{r['saved']:>9}  "
              f"{r['rounds']:<34}{r['tip']:<11}{r['on']:<11}{r['pull']:<8}")
        print(f"{'':<6}branch holds: {r['targets']}")
        for note in r["notes"]:
            if any(word in note for word in ("loop", "revision", "changed", "deleted", "closed", "tokens")):
                print(f"{'':<6}{note[:150]}")
        if r["rc"] not in (0, 1):
            print(f"{'':<6}stderr: {r['stderr']}")
    rerun, fresh = rows[1], rows[-1]
    print(f"\nre-run on the same head: {rerun['wall']:.1f} s and {rerun['requests']} model requests, against "
          f"{fresh['wall']:.1f} s and {fresh['requests']} without reuse ({rerun['wall'] / fresh['wall']:.2f}x the time); "
          f"the pull request's body {'unchanged' if rerun.get('body_same') else 'CHANGED'}")
    print(f"total: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
