"""The Markdown report, rendered from JSON reports of real pytest sessions (pytester)."""

import json
import re

import pytest

from pytest_soap.report.markdown import MARKER, render
from pytest_soap.report.terminal import counts, loop_lines, write_loop
from pytest_soap.soap import CandidateStatus, OptimizationStatus
from pytest_soap.soap.loop import Optimization, Tried
from pytest_soap.soap.session import LoopRun

from projects import commit, git_project, write  # tests/projects.py

WORK = """
    import time

    def slowed():
        time.sleep(0.02 * {slow})

    def steady():
        time.sleep(0.01)

    def hungry():
        return b"x" * ({mem_mb} * 2**20)
"""

TESTS = """
    import pytest
    from pkg import work

    @pytest.mark.parametrize("n", [1], ids=["x|y,z"])  # an id with a pipe and a comma, as users write them
    def test_slowed(n):
        work.slowed()

    def test_steady():
        work.steady()

    def test_hungry():
        assert work.hungry()
"""

SLOWED = "tests/test_work.py::test_slowed[x|y,z]"


def regressed_report(pytester, *args):
    """A repository whose last commit makes one test 10x slower and one 3x hungrier, gated against the commit before."""
    root = pytester.path
    (root / ".gitignore").write_text("report.json\n")
    repo = git_project(root, WORK.format(slow=1, mem_mb=10), TESTS)
    write(root / "pkg" / "work.py", WORK.format(slow=10, mem_mb=30))
    commit(repo, "slower and hungrier")
    result = pytester.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json", *args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    return json.loads((root / "report.json").read_text())


def gate_report(pytester, *args):
    pytester.runpytest("--soap", "--soap-json", "report.json", *args)
    return json.loads((pytester.path / "report.json").read_text())


def section(text, heading):
    """The text under a `#### heading`, up to the next block that is not part of it."""
    return text.split(f"#### {heading}\n\n", 1)[1].split("\n\n", 1)[0]


def chart(text):
    found = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    assert len(found) == 1, text
    return found[0]


def test_a_regression_leads_with_the_verdict_and_lists_each_regressed_metric_with_its_evidence(pytester):
    data = regressed_report(pytester)
    text = render(data, notes=["optimisation skipped: ANTHROPIC_API_KEY is not set"])
    lines = text.splitlines()
    assert lines[0] == MARKER
    commit = data["against"]["commit"][:10]
    verdict = next(line for line in lines if line.startswith(":"))
    assert verdict.startswith(f":x: **2 tests regressed** against `HEAD~1` (`{commit}`)")
    assert verdict.endswith("3 tests: 2 regressed, 1 unchanged")

    rows = section(text, "Regressions").splitlines()
    assert rows[0] == "| Test | Metric | Base → head | Ratio | 95% interval | p-value |"
    tests = {t["nodeid"]: t for t in data["tests"]}
    expected = [(nodeid, metric) for nodeid in data["regressions"] for metric in tests[nodeid]["regressed_metrics"]]
    assert len(rows) == 2 + len(expected)  # one row per regressed metric, nothing else
    for row, (nodeid, metric) in zip(rows[2:], expected):
        v = tests[nodeid]["metrics"][metric]
        low, high = v["interval"]
        assert f"**{v['ratio']:.2f}×** | [{low:.2f}–{high:.2f}] | {v['p_value']:.3g} ({v['runs']} runs) |" in row
    slowed_row = rows[2]
    assert slowed_row.startswith("| `tests/test_work.py::test_slowed[x\\|y,z]` | time | ")  # the pipe escaped
    assert re.search(r"\| \d+\.\d ms → \d+\.\d ms \|", slowed_row)
    assert "| peak | 10.0 MiB → 30.0 MiB" in text
    assert "test_steady" not in text  # unchanged tests are only counted

    # Two regressions, each with its own first cause: which of the two rows comes first is their shares' tie-break
    # (both near 100%), and no promise is made about it.
    blamed = section(text, "Blamed functions").splitlines()
    assert len(blamed) == 4
    slowed = next(row for row in blamed[2:] if "| `slowed` |" in row)
    assert slowed.startswith("| `pkg/work.py:") and "| `slowed` | changed | `test_slowed[x\\|y,z]` " in slowed
    assert re.search(r"`test_slowed\[x\\\|y,z\]` \d+% \|$", slowed)
    assert any(row.startswith("| `pkg/work.py:") and "| `hungry` | changed | `test_hungry` " in row for row in blamed[2:])
    assert f"From profiles of both sides and the diff against {commit}." in text

    assert "- optimisation skipped: ANTHROPIC\\_API\\_KEY is not set" not in text  # notes are the caller's Markdown
    assert "\n- optimisation skipped: ANTHROPIC_API_KEY is not set\n" in text
    assert text.rstrip().endswith("</sub>") and "time: wall clock" in text.splitlines()[-1]
    assert "Optimisations" not in text and "#### Improvements" not in text


def test_the_chart_plots_each_regressed_tests_ratio_against_the_threshold_line(pytester):
    data = regressed_report(pytester, "--soap-threshold", "25")
    block = chart(render(data))
    assert block.startswith("xychart-beta\n")
    labels = json.loads(re.search(r"^    x-axis (\[.*\])$", block, re.M).group(1))
    bars = json.loads(re.search(r"^    bar (\[.*\])$", block, re.M).group(1))
    line = json.loads(re.search(r"^    line (\[.*\])$", block, re.M).group(1))
    # Short names (no quote, bracket, comma or pipe), the furthest from 1 first. Which of the two that is depends
    # on test_hungry's TMU ratio, the noisiest figure (10.5x once, past test_slowed's 9.9x), so it is read back.
    nodeids = {"test_slowed x y z": SLOWED, "test_hungry": "tests/test_work.py::test_hungry"}
    assert sorted(labels) == sorted(nodeids)
    tests = {t["nodeid"]: t for t in data["tests"]}
    worst = [max(tests[n]["metrics"][m]["ratio"] for m in tests[n]["regressed_metrics"]) for n in map(nodeids.get, labels)]
    assert bars == [round(r, 2) for r in worst] and worst == sorted(worst, reverse=True)
    assert line == [1.25, 1.25]  # 1 + --soap-threshold
    top = float(re.search(r'^    y-axis "head / base" 0 --> ([\d.]+)$', block, re.M).group(1))
    assert top > max(bars)


def test_the_optimisation_section_shows_figures_rounds_tokens_and_the_pull_request(pytester):
    data = regressed_report(pytester)
    opt = Optimization("pkg/work.py", "slowed", status="accepted", tests=[SLOWED],
                       before={"time_s": 0.2, "peak_mb": 0.01}, after={"time_s": 0.05, "peak_mb": 0.01},
                       candidates=[Tried(1, "rejected", "differential check, different: returned <lambda> where the "
                                                        "original returned 1"),
                                   Tried(2, "accepted", "time 0.10× the best, peak 1.00×")],
                       tokens={"input": 329, "output": 384, "cache_read": 1020, "cache_write": 0}, cost_usd=0.01)
    data["optimizations"], data["patch"] = [opt.to_dict()], ".soap/optimized.patch"

    text = render(data, pr_url="https://github.com/o/r/pull/7")
    part = text.split("#### Optimisations\n\n", 1)[1]
    assert part.startswith("**`slowed`** in `pkg/work.py`: **accepted**\n")
    assert "| time | 200.0 ms | 50.0 ms | 0.25× |" in part
    assert "| peak | 10 KiB | 10 KiB | 1.00× |" in part
    assert "<details><summary>2 rounds tried</summary>\n\n- round 1: rejected: differential check, different: " \
           "returned \\<lambda\\> where the original returned 1\n- round 2: accepted: time 0.10× the best" in part
    assert "Tokens: 329 in (1020 from the cache), 384 out, about $0.01." in part
    assert "A pull request with the optimised code: https://github.com/o/r/pull/7" in part
    assert "optimized.patch" not in part

    without_pr = render(data)
    assert "pull request" not in without_pr
    assert "The accepted revisions are in `.soap/optimized.patch`" in without_pr


def test_nothing_regressed_against_a_saved_baseline_says_so_without_tables(pytester):
    pytester.makepyfile(test_quiet="""
        import time

        def test_a():
            time.sleep(0.01)

        def test_b():
            time.sleep(0.01)
    """)
    assert pytester.runpytest("--soap", "--soap-save").ret == 0
    data = gate_report(pytester)
    assert data["against"] is None and data["baseline"] is not None
    text = render(data, title="pytest-soap (py3.11)", notes=["2 tests ran"])
    assert "\n### pytest-soap (py3.11)\n" in text
    verdict = next(line for line in text.splitlines() if line.startswith(":"))
    assert verdict.startswith(":white_check_mark: **no performance regression** against the saved baseline `")
    assert re.search(r"\.soap/baseline\.json` \((no commit|`[0-9a-f]{10}`), \d{4}-\d\d-\d\d\) · ", verdict)
    assert "2 tests: " in verdict
    assert "#### Regressions" not in text and "Blamed functions" not in text
    assert "\n- 2 tests ran\n" in text


def test_without_a_baseline_or_tests_the_report_is_still_whole(pytester):
    pytester.makepyfile(test_new="def test_a():\n    pass\n")
    text = render(gate_report(pytester))
    assert ":grey_question: **not compared**: no saved baseline and no git ref to compare with · 1 test: 1 new" in text
    assert "```mermaid" not in text and "| Test |" not in text

    (pytester.path / "test_new.py").unlink()
    empty = gate_report(pytester)
    assert empty["tests"] == []
    text = render(empty)
    assert text.startswith(MARKER + "\n") and "· 0 tests\n" in text and "```mermaid" not in text


def test_five_hundred_unchanged_tests_are_counted_not_listed(pytester):
    pytester.makepyfile(test_many="""
        import time
        import pytest

        @pytest.mark.parametrize("i", range(500))
        def test_many(i):
            time.sleep(0.002)
    """)
    assert pytester.runpytest("--soap", "--soap-save", "--soap-memory", "off").ret == 0
    data = gate_report(pytester, "--soap-memory", "off")
    text = render(data)
    assert "500 tests: " in text
    unchanged = [t["nodeid"] for t in data["tests"] if t["verdict"] == "unchanged"]
    assert len(unchanged) > 400
    assert not any(f"`{nodeid}`" in text for nodeid in unchanged)
    assert len(text) < 8000  # at most the capped improvements table, should noise call some improved
    assert "memory: not measured" in text


def test_blamed_functions_show_each_share_as_the_terminal_does_and_a_helper_in_its_callers_share():
    test = "tests/test_work.py::test_process"
    evidence = lambda share, reason, within=None: {test: {"rank": 1, "share": share, "reason": reason,
                                                          "within": within, "basis": "profiles of both sides"}}
    report = {"tests": [], "functions": [
        {"file": "pkg/work.py", "qualname": "process", "lineno": 9, "changed": True, "tests": [test],
         "evidence": evidence(0.996, "changed; time in its callees rose")},
        {"file": "pkg/work.py", "qualname": "helper", "lineno": 3, "changed": False, "tests": [test],
         "evidence": evidence(0.0, "unchanged; rose because process (changed) calls it more", "process")}]}
    rows = section(render(report), "Blamed functions").splitlines()
    assert rows[2].endswith("| `process` | changed | `test_process` 100% |")
    # Its rise is in process's share already: not a second share of its own, and not "0%" to blame.
    assert rows[3].endswith("| `helper` | unchanged | `test_process` (in `process`'s share) |")
    del report["functions"][1]["evidence"][test]["within"]  # a report written before the field existed
    assert section(render(report), "Blamed functions").splitlines()[3].endswith("(in its caller's share) |")


def test_counts_follow_the_verdicts_rank_then_the_order_seen_as_the_terminal_writes_them():
    labels = ["flaky", "failed on ref", "unchanged", "removed", "regressed", "skipped", "unchanged", "ungated",
              "failed", "failed on ref", "error", "new", "excluded", "xfailed", "improved"]
    expected = ("15 tests: 1 regressed, 1 improved, 2 unchanged, 1 new, 1 ungated, 1 excluded, 1 failed, 1 error, "
                "1 flaky, 1 skipped, 1 xfailed, 2 failed on ref, 1 removed")
    verdict = render({"tests": [{"nodeid": f"t.py::test_{i}", "verdict": v} for i, v in enumerate(labels)]})
    assert expected in verdict
    assert counts(labels) == expected.split(": ", 1)[1].split(", ")


def test_the_terminal_marks_an_accepted_target_by_its_status_not_by_its_wording():
    class Reporter:
        def __init__(self):
            self.lines = []

        def write_sep(self, *args):
            pass

        def write_line(self, line, **markup):
            self.lines.append((line, markup.get("green", False)))

    kept = Optimization("pkg/work.py", "slowed", status=OptimizationStatus.ACCEPTED,
                        candidates=[Tried(1, CandidateStatus.ACCEPTED, "time 0.10× the best")])
    left = Optimization("pkg/work.py", "other", status=OptimizationStatus.REJECTED,
                        reason="no candidate was correct and measurably cheaper  ACCEPTED  nothing")
    run = LoopRun([kept, left])
    reporter = Reporter()
    write_loop(reporter, run)
    assert reporter.lines == [("pkg/work.py::slowed  ACCEPTED", True), ("    round 1: accepted: time 0.10× the best", False),
                              ("pkg/work.py::other  REJECTED", False),
                              ("    no candidate was correct and measurably cheaper  ACCEPTED  nothing", False)]
    assert loop_lines(run) == [line for line, _ in reporter.lines]
    assert kept.to_dict()["status"] == "accepted" and type(kept.to_dict()["candidates"][0]["status"]) is str
