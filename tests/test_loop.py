"""The SOAP loop end to end: a real git project, the real anthropic SDK talking to a loopback Messages API
with scripted replies, candidates verified in a sandbox and raced against the best."""

import json
import os
import subprocess
import sys
import textwrap

import git
import pytest

from pytest_soap.soap import Prior, Target
from pytest_soap.soap.llm import AnthropicProvider
from pytest_soap.soap.loop import optimize
from pytest_soap.soap.loopback import EMPTY, Error, Forever, MessagesServer

from projects import UNIQUE as ORIGINAL  # tests/projects.py

TESTS = '''\
from pkg.work import unique


def test_unique_keeps_first_seen_order():
    assert unique([3, 1, 3, 2, 1]) == [3, 1, 2]


def test_unique_on_a_large_list():
    data = list(range(1500, 0, -1)) * 2
    assert len(unique(data)) == 1500  # weak: only the length


def test_something_else():
    assert sorted([2, 1]) == [1, 2]
'''


def reply(code: str, words: str = "Here is a faster version.") -> str:
    return f"{words}\n\n```python\n{textwrap.dedent(code)}```\n"


FAST = reply("""
    def unique(items):
        return list(dict.fromkeys(items))
""")
A_SET = reply("""
    def unique(items):
        seen, out = set(), []
        for item in items:
            if item not in seen:
                seen.add(item)
                out.append(item)
        return out
""")
# Correct, and a Python-level scan in place of `in`: several times slower, so it loses the race plainly
# even on a busy machine (copying the list each time was only 1.17x slower on CI, within the noise).
SLOWER = reply("""
    def unique(items):
        seen = []
        for item in items:
            if all(item != kept for kept in seen):
                seen.append(item)
        return seen
""")


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "work.py").write_text(ORIGINAL)
    (root / "tests" / "test_work.py").write_text(TESTS)
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n')
    repo = git.Repo.init(root)
    repo.git.add("--all")
    repo.index.commit("base", author=git.Actor("t", "t@example.com"), committer=git.Actor("t", "t@example.com"))
    return root


def target(root):
    return Target(root, "pkg/work.py", "unique", ("tests/test_work.py::test_unique_keeps_first_seen_order",
                                                  "tests/test_work.py::test_unique_on_a_large_list"))


def run_loop(root, script, iterations, metrics=("time_s",), prior=None):
    with MessagesServer(script) as server:
        provider = AnthropicProvider(api_key="sk-test", base_url=server.url, timeout=10, max_retries=2)
        return optimize(target(root), provider, "claude-test", iterations, list(metrics), "time 12.0×",
                        prior=prior), server


def prior_of(code: str) -> Prior:
    """An earlier run's revision of unique: the module with `code` for it."""
    return Prior("pkg/work.py", "unique", ORIGINAL[:ORIGINAL.index("def unique")] + textwrap.dedent(code),
                 "commit 0123456789ab", tokens=5000)


def test_every_kind_of_bad_candidate_is_rejected_with_its_reason_and_the_correct_faster_one_is_kept(project):
    script = [
        "I would rather not.",                                              # no code block
        reply("def unique(items):\n    return [\n"),                       # a syntax error
        reply("def uniq(items):\n    return list(dict.fromkeys(items))\n"),  # the wrong name
        reply("def unique(items, key):\n    return list(items)\n"),        # the wrong signature
        reply("def unique(items):\n    return sorted(set(items))\n"),      # wrong: the tests catch it
        reply("def unique(items):\n    return list(set(items)) if len(items) > 100 else list(dict.fromkeys(items))\n"),
        SLOWER,                                                              # correct, slower
        reply("def unique(items):\n    while True:\n        pass\n"),      # never returns
        reply("def unique(items):\n    hog = bytearray(64 * 2**30)\n    return list(dict.fromkeys(items))\n"),
        reply("import os\n\ndef unique(items):\n    os.environ.get('ANTHROPIC_API_KEY')\n    return list(dict.fromkeys(items))\n"),
        reply("def unique(items):\n    open('leak.txt', 'w').write(str(items))\n    return list(dict.fromkeys(items))\n"),
        EMPTY,
        FAST,
    ]
    before = (project / "pkg" / "work.py").read_text()
    opt, server = run_loop(project, script, iterations=len(script))
    reasons = [(c.status, c.reason) for c in opt.candidates]
    assert [s for s, _ in reasons] == ["rejected"] * 6 + ["no gain"] + ["rejected"] * 5 + ["accepted"], reasons
    assert "no ```python block" in reasons[0][1]
    assert "parse" in reasons[1][1]
    assert "unique" in reasons[2][1] and "signature" in reasons[3][1]
    assert reasons[4][1].startswith("tests failed") and "test_unique_keeps_first_seen_order" in reasons[4][1]
    assert reasons[5][1].startswith("differential check, different")  # the weak test let it through
    assert "time made worse" in reasons[6][1]
    assert reasons[7][1].startswith("tests timeout: the check and race timed out after ")
    assert "the original's run of the covering tests" in reasons[7][1]  # the limit says what it came from
    assert reasons[8][1].startswith("tests memory")
    assert "os" in reasons[9][1] and "open" in reasons[10][1]
    assert "no ```python block" in reasons[11][1]
    assert opt.status == "accepted" and "dict.fromkeys" in opt.revised
    assert opt.after["time_s"] < opt.before["time_s"]
    assert opt.diff().startswith("--- a/pkg/work.py\n+++ b/pkg/work.py\n")
    # Model-written code ran in the sandbox only: the user's tree is as it was, and nothing leaked into it.
    assert (project / "pkg" / "work.py").read_text() == before and not (project / "leak.txt").exists()
    assert git.Repo(project).git.status("--porcelain") == ""
    # Every round after the first told the model why the earlier candidates were rejected.
    last_prompt = server.requests[-1].body["messages"][-1]["content"]
    assert "round 5: rejected: tests failed" in json.dumps(last_prompt)
    assert opt.tokens["input"] > 0 and opt.tokens["output"] > 0


# Correct, and between the two: a sort by first position scans the list once per distinct item. On the regressed
# tests themselves, where the race is run, about 4x faster than the list scan and 15x slower than dict.fromkeys
# (a set loop was only 0.90x of dict.fromkeys there: pytest's own cost per test is in both).
MIDDLE = reply("""
    def unique(items):
        out = list(set(items))
        out.sort(key=items.index)
        return out
""")


def test_the_fastest_correct_candidate_is_kept_not_the_last(project):
    # The sort: faster than the list scan. dict.fromkeys: faster still. The sort again: correct, slower than the best.
    opt, _ = run_loop(project, [MIDDLE, FAST, MIDDLE, MIDDLE], iterations=5)
    assert [c.status for c in opt.candidates] == ["accepted", "accepted", "no gain", "no gain"], (  # then converged
        opt.reason, [(c.status, c.reason) for c in opt.candidates])
    assert opt.status == "accepted" and "dict.fromkeys" in opt.revised


def test_an_earlier_revision_is_round_0_and_stays_the_best_when_the_replies_are_worse(project):
    fast = "def unique(items):\n    return list(dict.fromkeys(items))\n"
    opt, server = run_loop(project, [SLOWER], iterations=1, prior=prior_of(fast))
    rounds = [(c.iteration, c.status, c.reason) for c in opt.candidates]
    assert [r[:2] for r in rounds] == [(0, "accepted"), (1, "no gain")], rounds
    assert rounds[0][2].startswith("the earlier revision (commit 0123456789ab), re-verified: time ")
    assert opt.status == "accepted" and "dict.fromkeys" in opt.revised
    assert opt.reused == {"from": "commit 0123456789ab", "tokens": 5000}
    # The model was shown the earlier revision as the best so far, to improve on.
    request = json.dumps(server.requests[0].body["messages"])
    assert "The best revision so far, which is kept" in request and "dict.fromkeys" in request


def test_an_earlier_revision_that_is_wrong_or_reaches_further_here_is_rejected_and_the_loop_goes_on(project):
    wrong = prior_of("def unique(items):\n    return sorted(set(items))\n")
    opt, server = run_loop(project, [FAST], iterations=1, prior=wrong)
    assert [(c.iteration, c.status) for c in opt.candidates] == [(0, "rejected"), (1, "accepted")]
    assert opt.candidates[0].reason.startswith("tests failed") and opt.reused == {}
    assert "round 0: the revision an earlier run kept, rejected: tests failed" in json.dumps(server.requests[0].body)
    # A revision is model-written code: merged into a new tree, it still may use nothing the original does not.
    reaching = prior_of("import os\n\ndef unique(items):\n    os.getcwd()\n    return list(dict.fromkeys(items))\n")
    opt, _ = run_loop(project, [Forever("I would rather not.")], iterations=1, prior=reaching)
    assert opt.candidates[0].status == "rejected" and "os" in opt.candidates[0].reason and opt.status == "rejected"


def test_the_race_verdict_says_when_a_metric_was_made_worse_which_alone_stops_an_earlier_revision():
    from pytest_soap.compare import Thresholds
    from pytest_soap.soap.loop import judge_race

    best = [0.100, 0.102, 0.098, 0.101, 0.099, 0.100, 0.103, 0.097]

    def race(factor, peak=10.0):
        return {"time_s": {"champion": best, "challenger": [t * factor for t in best]},
                "peak_mb": {"champion": 10.0, "challenger": peak}}

    faster, same, slower = (judge_race(race(f), ["time_s"], Thresholds()) for f in (0.5, 1.0, 1.5))
    assert (faster.status, faster.worse) == ("accepted", False)
    # No significant gain, nothing made worse: a new candidate is not kept, an earlier revision stays (loop._check).
    assert (same.status, same.worse) == ("no gain", False) and "no significant gain" in same.reason
    assert (slower.status, slower.worse) == ("no gain", True) and "time made worse" in slower.reason
    hungrier = judge_race(race(0.5, peak=20.0), ["time_s"], Thresholds())
    assert hungrier.worse and "peak made worse" in hungrier.reason and hungrier.figures in hungrier.reason


def test_through_pytest_a_relative_prior_file_is_round_0_against_a_git_ref(project):
    from pytest_soap.soap import write_priors

    work = project / "pkg" / "work.py"
    work.write_text(ORIGINAL.replace("if item not in seen:", "if item not in sorted(seen):"))
    repo = git.Repo(project)
    repo.git.add("--all")
    repo.index.commit("slower", author=git.Actor("t", "t@example.com"), committer=git.Actor("t", "t@example.com"))
    fast = work.read_text()
    fast = fast[:fast.index("def unique")] + "def unique(items):\n    return list(dict.fromkeys(items))\n"
    # Relative, and not in git: read by the session that runs the loop, not by the ref's side in its worktree.
    write_priors(project / "prior.json", [Prior("pkg/work.py", "unique", fast, "commit 0123456789ab", 700)])
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CI")}
    with MessagesServer([Forever(SLOWER)]) as server:
        env.update(ANTHROPIC_API_KEY="sk-test", ANTHROPIC_BASE_URL=server.url)
        run = subprocess.run([sys.executable, "-m", "pytest", "--soap", "--soap-against", "HEAD~1", "--soap-optimize",
                              "--soap-iterations=1", "--soap-prior", "prior.json", "--soap-json=report.json",
                              "-p", "no:cacheprovider"], cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    [o] = json.loads((project / "report.json").read_text())["optimizations"]
    assert [(c["iteration"], c["status"]) for c in o["candidates"]] == [(0, "accepted"), (1, "no gain")], o
    assert o["reused"] == {"from": "commit 0123456789ab", "tokens": 700} and "dict.fromkeys" in o["diff"]


def test_a_prior_file_that_is_not_one_is_a_usage_error_in_one_line(project):
    bad = project / "prior.json"
    for text, expected in (("{not json", "is not JSON"), ('{"schema": 1, "revisions": [{"file": 1}]}', "revision 0 is not"),
                           ('{"schema": 9, "revisions": []}', "is not a file of earlier revisions")):
        bad.write_text(text)
        run = subprocess.run([sys.executable, "-m", "pytest", "--soap", "--soap-optimize", f"--soap-prior={bad}",
                              "-p", "no:cacheprovider"], cwd=project, capture_output=True, text=True)
        assert run.returncode == 4 and expected in run.stderr, run.stderr
        assert len([line for line in run.stderr.splitlines() if "soap-prior" in line]) == 1


def test_a_revision_is_applied_only_over_the_text_the_loop_started_from(project):
    from pytest_soap.soap.loop import Optimization
    from pytest_soap.soap.session import apply_revision

    work = project / "pkg" / "work.py"
    revision = Optimization("pkg/work.py", "unique", original=ORIGINAL, revised=ORIGINAL + "\n# revised\n")
    work.write_text(ORIGINAL + "\n# edited by hand meanwhile\n")
    assert "changed while the loop ran" in apply_revision(project, revision)
    assert work.read_text().endswith("# edited by hand meanwhile\n")
    work.write_text(ORIGINAL)
    work.chmod(0o644)
    assert apply_revision(project, revision) is None
    assert work.read_text().endswith("# revised\n") and work.stat().st_mode & 0o777 == 0o644


def test_a_rate_limit_is_retried_and_a_server_that_keeps_failing_ends_the_loop_in_one_line(project):
    opt, server = run_loop(project, [Error(429, "slow down", retry_after=0), FAST], iterations=1)
    assert opt.status == "accepted" and len(server.requests) == 2
    opt, _ = run_loop(project, [Forever(Error(500, "boom"))], iterations=3)
    assert opt.status == "failed" and "500" in opt.reason and "\n" not in opt.reason
    assert len(opt.candidates) == 1 and opt.revised is None


def test_through_pytest_the_gate_blames_the_function_and_the_patch_is_applied_only_when_asked(project):
    work = project / "pkg" / "work.py"
    work.write_text(ORIGINAL.replace("if item not in seen:", "if item not in sorted(seen):"))  # sorts: far slower
    repo = git.Repo(project)
    repo.git.add("--all")
    repo.index.commit("slower", author=git.Actor("t", "t@example.com"), committer=git.Actor("t", "t@example.com"))
    slowed = work.read_text()
    cmd = [sys.executable, "-m", "pytest", "--soap", "--soap-against", "HEAD~1", "--soap-optimize",
           "--soap-iterations=1", "--soap-json=report.json", "-p", "no:cacheprovider"]
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CI")}
    # Without a key the gate still runs, fails on the regression, and says why nothing was optimised.
    run = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 1 and "optimisation skipped: ANTHROPIC_API_KEY is not set" in run.stdout, run.stdout
    assert json.loads((project / "report.json").read_text())["optimizations"] == []
    with MessagesServer([Forever(FAST)]) as server:
        env.update(ANTHROPIC_API_KEY="sk-test", ANTHROPIC_BASE_URL=server.url)
        run = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
        report = json.loads((project / "report.json").read_text())
        assert [(o["file"], o["qualname"], o["status"]) for o in report["optimizations"]] == [
            ("pkg/work.py", "unique", "accepted")], run.stdout
        assert "SOAP loop" in run.stdout and "ACCEPTED" in run.stdout
        patch = project / ".soap" / "optimized.patch"
        assert report["patch"] == str(patch) and "+    return list(dict.fromkeys(items))" in patch.read_text()
        assert work.read_text() == slowed  # not applied without --soap-apply
        run = subprocess.run(cmd + ["--soap-apply"], cwd=project, env=env, capture_output=True, text=True)
    assert "dict.fromkeys" in work.read_text(), run.stdout
    assert subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
                          env=env, capture_output=True).returncode == 0


def test_soap_optimize_takes_any_function_and_says_plainly_when_it_cannot(project):
    cmd = [sys.executable, "-m", "pytest_soap.cli", "optimize", "pkg/work.py::unique", "--iterations=1",
           "--json=loop.json"]
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")}
    run = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.strip() == (
        "soap optimize: optimisation skipped: ANTHROPIC_API_KEY is not set (or register a pytest_soap_model_provider hook)")
    bad = subprocess.run(cmd[:4] + ["pkg/nowhere.py::unique"], cwd=project, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "is not PATH::QUALNAME" in bad.stderr
    with MessagesServer([FAST]) as server:
        env.update(ANTHROPIC_API_KEY="sk-test", ANTHROPIC_BASE_URL=server.url)
        run = subprocess.run(cmd + ["--apply"], cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pkg/work.py::unique  ACCEPTED" in run.stdout
    assert json.loads((project / "loop.json").read_text())["optimizations"][0]["status"] == "accepted"
    assert "dict.fromkeys" in (project / "pkg" / "work.py").read_text()


def test_two_revisions_of_one_file_are_both_applied(project):
    from pytest_soap.soap.loop import Optimization
    from pytest_soap.soap.session import apply_revision

    two = ORIGINAL + "\n\ndef double(xs):\n    return [x * 2 for x in xs]\n"
    (project / "pkg" / "work.py").write_text(two)
    first = Optimization("pkg/work.py", "unique", original=two, revised=two.replace("seen = []", "seen = []  # one"))
    second = Optimization("pkg/work.py", "double", original=two, revised=two.replace("x * 2", "x + x"))
    applied = {}
    assert apply_revision(project, first, applied) is None and apply_revision(project, second, applied) is None
    text = (project / "pkg" / "work.py").read_text()
    assert "seen = []  # one" in text and "x + x" in text


def test_every_time_limit_comes_from_what_was_measured():
    from pytest_soap.soap.loop import UNMEASURED_S, check_budget, first_budget, profile_budget

    slow = first_budget(30.0)  # covering tests the gate measured at 30 s: the first run may take 3x, plus start-up
    assert slow.seconds == 120.0
    assert slow.timed_out() == ("the original's covering tests timed out after 120.0 s "
                                "(3x the 30.00 s the gate measured for them, plus 30 s for start-up)")
    assert first_budget(None).seconds == UNMEASURED_S and "nothing was measured" in first_budget(None).timed_out()
    # Later limits grow with the first run and with the regressed tests' time, and none is a fixed figure.
    assert check_budget(2.0, 0.5).seconds < check_budget(4.0, 0.5).seconds < check_budget(4.0, 1.0).seconds
    assert check_budget(30.0, 30.0).seconds > 30.0 * 2 * 9  # the race's samples of a 30 s test fit
    assert profile_budget(1.0).seconds < profile_budget(10.0).seconds


def test_the_covering_tests_are_those_of_the_given_ones_that_call_the_target(project):
    # From the gate, a target's tests are the session's passing tests; the first run finds which call it.
    race = ("tests/test_work.py::test_unique_on_a_large_list",)
    with MessagesServer([FAST]) as server:
        provider = AnthropicProvider(api_key="sk-test", base_url=server.url, timeout=10, max_retries=2)
        opt = optimize(Target(project, "pkg/work.py", "unique", ("tests/test_work.py",), race), provider,
                       "claude-test", 1, ["time_s"], "time 12.0×")
    assert opt.status == "accepted", (opt.reason, opt.candidates)
    assert opt.checks["tests"] == ["tests/test_work.py::test_unique_keeps_first_seen_order",
                                   "tests/test_work.py::test_unique_on_a_large_list"]  # not test_something_else
    assert opt.checks["raced"] == list(race)
