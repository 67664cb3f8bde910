"""`soap demo`: the whole flow, run on the bundled example project in a temporary directory.

1. copy examples/demo (a small inventory library and its tests) and commit it;
2. apply and commit the planted regression, examples/demo_regression.patch (one module made slower and hungrier);
3. run the gate with the SOAP loop: pytest --soap --soap-against HEAD~1 --soap-optimize --soap-json report.json
   (it should fail, naming the regressed tests and the functions that caused them, and write a patch);
4. apply the patch and run the gate again: the regressions it fixed should be gone.
When a step fails, the project is kept and the demo says where, with the command that runs that step again.
With ANTHROPIC_API_KEY set the loop asks the live model; without it, a loopback Messages API serves the
scripted replies shipped with the example (examples/demo_replies.json), and the demo says so.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from .compare import Verdict
from .soap import OptimizationStatus

KEEP_ENV = "SOAP_DEMO_KEEP"  # set it to keep the temporary project for a look around
# What examples/demo_regression.patch changes, and the tests that must catch it.
SLOWED_TEST = "tests/test_orders.py::test_pick_list"
BIGGER_TEST = "tests/test_orders.py::test_parse_orders"
CAUSES = {SLOWED_TEST: "pick_list now scans a list where it looked up a set",
          BIGGER_TEST: "parse_orders now holds every CSV row, as a dict, in memory before building the order lines"}
FUNCTIONS = {SLOWED_TEST: "pick_list", BIGGER_TEST: "parse_orders"}  # the planted test's regressed function
STEPS = 4
GATE = ("--soap", "--soap-against", "HEAD~1")
LABELS = {"time_s": "time", "peak_mb": "peak memory", "tmu_mbs": "TMU"}
BOLD, RESET = ("\033[1m", "\033[0m") if sys.stdout.isatty() and not os.environ.get("NO_COLOR") else ("", "")


def find_examples() -> Path | None:
    """The bundled examples: inside the package when installed from a wheel, else at the repository root."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "examples", package.parent / "examples"):
        if all((candidate / name).exists() for name in ("demo", "demo_regression.patch", "demo_replies.json")):
            return candidate
    return None


@dataclass
class Progress:
    """How far the demo got: the step under way and the shell command that runs it again in the project."""
    step: int = 0
    rerun: str | None = None  # None: nothing to run by hand, run `soap demo` again
    note: str = ""


def pytest_command(*options: str) -> str:
    """The exact command run_pytest runs, for the user to paste (the options are the demo's own: no quoting)."""
    return " ".join([shlex.quote(sys.executable), "-m", "pytest", *options])


def step(number: int, title: str, command: str | None = None) -> None:
    print(f"\n{BOLD}━━ Step {number}/{STEPS}: {title}{RESET}")
    if command:
        print(f"   $ {command}")
    print(flush=True)  # before a subprocess writes to the same terminal


def run_pytest(project: Path, *options: str, env: dict[str, str] | None = None) -> int:
    """Run pytest in the project as the user would, its output going straight to the terminal."""
    env = dict(os.environ if env is None else env)
    env.pop("PYTEST_ADDOPTS", None)  # the user's options are meant for their own projects, not this one
    return subprocess.run([sys.executable, "-m", "pytest", *options], cwd=project, env=env).returncode


def model_server(examples: Path):
    """With a key, the live model (nothing to serve); without one, the scripted replies on loopback."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        return nullcontext(None)
    from .soap.loopback import Choose, Forever, MessagesServer

    replies = json.loads((examples / "demo_replies.json").read_text(encoding="utf-8"))["replies"]

    def reply_for(body: dict) -> str:
        asked = json.dumps(body)
        return next((text for name, text in replies.items() if f"The target is `{name}`" in asked),
                    "I have no scripted reply for this function.")
    return MessagesServer([Forever(Choose(reply_for))])


def commit(repo, message: str) -> None:
    repo.git.add("--all")
    # --no-verify: hooks from the user's global git configuration have no business in the demo.
    repo.git.commit("--no-verify", "--quiet", "-m", message)


def ratios(test: dict, metrics: list[str] | None = None) -> str:
    """'time 9.94×, peak memory 1.65×' for a test of the JSON report: its regressed metrics, or those given."""
    return ", ".join(f"{LABELS.get(m, m)} {test['metrics'][m]['ratio']:.2f}×"
                     if test["metrics"][m]["ratio"] is not None else LABELS.get(m, m)
                     for m in (test["regressed_metrics"] if metrics is None else metrics) if m in test["metrics"])


def calls(o: dict) -> str:
    """What the loop measured of a kept revision's calls: time, and peak memory when it is at least 1 MiB."""
    before, after = o["before"], o["after"]
    text = f"its calls took {before['time_s'] * 1e3:.1f} ms, now {after['time_s'] * 1e3:.1f} ms"
    if max(before.get("peak_mb") or 0, after.get("peak_mb") or 0) >= 1:
        text += f"; their heap peaked at {before['peak_mb']:.1f} MiB, now {after['peak_mb']:.1f} MiB"
    return text


def demo_flow(examples: Path, project: Path, progress: Progress | None = None) -> str | None:
    """Steps 1 to 4 and what they showed; None when the demo went as intended, else what went wrong.
    `progress` follows the step under way, for a failure to say how to run it again."""
    import git  # GitPython: imported here so that a missing git binary is reported like any other failure

    progress = progress if progress is not None else Progress()
    progress.step = 1
    step(1, f"copy the example project to {project} and commit it",
         'git init && git add --all && git commit -m "inventory 1.4.0"')
    shutil.copytree(examples / "demo", project,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".soap", "report.json"))
    repo = git.Repo.init(project)
    with repo.config_writer() as config:  # works on a machine with no git identity, and never asks to sign
        config.set_value("user", "name", "pytest-soap demo")
        config.set_value("user", "email", "demo@pytest-soap.invalid")
        config.set_value("commit", "gpgsign", "false")
    commit(repo, "inventory 1.4.0")
    files = sorted(p.relative_to(project).as_posix() for p in project.rglob("*")
                   if p.is_file() and ".git" not in p.relative_to(project).parts)
    print("A small inventory library with a few tests:\n" + "\n".join(f"  {f}" for f in files))

    step(2, "plant a regression: a commit that makes inventory/orders.py slower and hungrier (its tests still pass)",
         'git commit -am "slow down pick_list and parse_orders"')
    progress.step = 2
    progress.rerun = (f"git apply {shlex.quote(str(examples / 'demo_regression.patch'))} && "
                      "git commit --all --no-verify -m 'slow down pick_list and parse_orders'")
    repo.git.apply(str(examples / "demo_regression.patch"))
    commit(repo, "slow down pick_list and parse_orders")
    print(repo.git.diff("HEAD~1", "HEAD"))

    step(3, "run the gate against the commit before, and send what regressed through the SOAP loop",
         "python -m pytest " + " ".join(GATE) + " --soap-optimize --soap-json report.json")
    progress.step = 3
    progress.rerun = pytest_command(*GATE, "--soap-optimize", "--soap-json", "report.json")
    with model_server(examples) as server:
        scripted = server is not None
        env = dict(os.environ)
        if server is None:
            print("The loop asks the live model (ANTHROPIC_API_KEY is set).")
        else:
            print("ANTHROPIC_API_KEY is not set: the model's replies are the scripted ones shipped with the example\n"
                  "(examples/demo_replies.json), served by a loopback Messages API. Set the key to ask the live model.")
            env.update(ANTHROPIC_API_KEY="demo-scripted-replies", ANTHROPIC_BASE_URL=server.url)
            progress.note = ("ANTHROPIC_API_KEY is not set: the scripted replies were served by `soap demo` only, "
                             "so that run skips the SOAP loop; set the key to ask the live model.")
        code = run_pytest(project, *GATE, "--soap-optimize", "--soap-json", "report.json", env=env)
    report = project / "report.json"
    if code not in (0, 1) or not report.is_file():
        return f"the gate run failed (pytest exited {code}); see its output above"
    data = json.loads(report.read_text(encoding="utf-8"))
    regressed = [t for t in data["tests"] if t["verdict"] == Verdict.REGRESSED]
    names = [t["nodeid"] for t in regressed]

    print(f"\n{BOLD}━━ What happened{RESET}\n")
    missed = [name for name in CAUSES if name not in names]
    if code != 1 or missed:
        return (f"the gate did not flag {' or '.join(missed) or 'a regression'} (pytest exited {code}); "
                "see its output above")
    print("pytest exited 1: the gate caught the planted regression. From report.json:")
    width = max(map(len, names))
    for test in regressed:
        print(f"  {test['nodeid']:<{width}}  {ratios(test)}")
        if test["nodeid"] in CAUSES:
            print(f"  {'':<{width}}  ({CAUSES[test['nodeid']]})")
    unexpected = [name for name in names if name not in CAUSES]
    if unexpected:
        print(f"{', '.join(unexpected)}: not changed by the planted commit, so a false alarm.")
    print(f"The other {len(data['tests']) - len(names)} tests passed the gate.")
    accepted = set()
    for o in data["optimizations"]:
        figures = (f": {calls(o)}" if o["before"] and o["after"] else f" ({o['reason']})" if o.get("reason") else "")
        print(f"SOAP loop, {o['qualname']}: {o['status']}{figures}")
        if o["status"] == OptimizationStatus.ACCEPTED:
            accepted.add(o["qualname"])
    if not data["patch"]:
        return "the SOAP loop kept no revision, so there is no patch to apply; see its output above"
    refused = [FUNCTIONS[name] for name in CAUSES if FUNCTIONS[name] not in accepted]
    if scripted and refused:  # the scripted fixes are correct and far cheaper: the loop must keep them
        return f"the SOAP loop did not keep the scripted fix of {' or '.join(refused)}; see its output above"
    fixed = [name for name in CAUSES if FUNCTIONS[name] in accepted]

    step(4, "apply the loop's patch and run the gate again", "git apply .soap/optimized.patch && python -m pytest "
         + " ".join(GATE) + " --soap-json report.json")
    progress.step, progress.note = 4, ""
    progress.rerun = f"git apply {shlex.quote(str(data['patch']))} && {pytest_command(*GATE, '--soap-json', 'report.json')}"
    repo.git.apply(str(data["patch"]))
    progress.rerun = pytest_command(*GATE, "--soap-json", "report.json")  # the patch is in the tree now
    print(repo.git.diff())
    code = run_pytest(project, *GATE, "--soap-json", "report.json")
    if code not in (0, 1) or not report.is_file():
        return f"the gate run failed (pytest exited {code}); see its output above"
    after = {t["nodeid"]: t for t in json.loads(report.read_text(encoding="utf-8"))["tests"]}
    print(f"\n{BOLD}━━ What happened{RESET}\n")
    print(f"pytest exited {code}. From report.json, against HEAD~1 (the code before the planted regression):")
    for name in CAUSES:
        before = next(t for t in regressed if t["nodeid"] == name)
        test = after.get(name)
        verdict = test["verdict"] if test else "not run"
        print(f"  {name:<{width}}  {verdict}" + (f": {ratios(test, before['regressed_metrics'])}" if test else ""))
        if name not in fixed:
            print(f"  {'':<{width}}  (the SOAP loop kept no revision of {FUNCTIONS[name]})")
    still = [name for name in fixed if name not in after or after[name]["verdict"] == Verdict.REGRESSED]
    if still:
        return f"{' and '.join(still)} still regressed after the patch (pytest exited {code})"
    flagged = [name for name, t in after.items() if t["verdict"] == Verdict.REGRESSED]
    others = [name for name in flagged if name not in CAUSES]
    if others:
        print(f"{', '.join(others)}: not changed by the demo, so a false alarm.")
    undone = ("the planted regression" if len(fixed) == len(CAUSES)
              else "the regression of " + " and ".join(FUNCTIONS[name] for name in fixed))
    print(f"The loop's patch undid {undone}" + ("; the gate passes." if code == 0 else
          f"; the gate still flags {', '.join(flagged)}." if flagged else f"; pytest exited {code}, see above."))
    print("""
On your own project:
  pytest --soap --soap-against main                  # exits 1 when a test got slower or bigger than on main
  pytest --soap --soap-against main --soap-optimize  # and sends what regressed through the SOAP loop
  pytest --soap --soap-save, later pytest --soap     # the same against a saved baseline, when no git ref fits
Options: pytest --help, section "pytest-soap"; per test: @pytest.mark.soap(threshold=25).""")
    if not os.environ.get(KEEP_ENV):
        print(f"To look around the demo project and its report.json, run `{KEEP_ENV}=1 soap demo`.")
    return None


def run_demo() -> int:
    examples = find_examples()
    if examples is None:
        print("soap demo: the example project (examples/demo) is not installed with pytest-soap", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="soap-demo-"))
    project = tmp / "inventory"
    progress = Progress()
    try:
        problem = demo_flow(examples, project, progress)
    except KeyboardInterrupt:
        problem = "interrupted"
    except Exception as e:  # git missing, a full disk...: one line, not a traceback
        problem = f"{type(e).__name__}: {e}".splitlines()[0]
    keep = bool(problem or os.environ.get(KEEP_ENV)) and project.is_dir()
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    elif not problem:
        print(f"\nThe demo project is kept at {project} ({KEEP_ENV} is set).")
    if problem:
        sys.stdout.flush()
        lines = [f"\nsoap demo failed at step {progress.step}/{STEPS}: {problem}"]
        if keep:
            lines.append(f"The demo project is kept at {project}.")
        if keep and progress.rerun:
            lines += ["To run the failed step again:", f"  cd {shlex.quote(str(project))} && {progress.rerun}"]
            lines += [progress.note] if progress.note else []
        else:
            lines.append("To try again: soap demo")
        print("\n".join(lines), file=sys.stderr)
        return 1
    return 0
