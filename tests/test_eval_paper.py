"""`soap eval --metrics paper`: programs scored as the SOAP paper's harness scores them (a cold process each,
its RSS sampled by memory_profiler), in the sandbox, with the exit status read where the harness never did."""

import json
import os
import subprocess
import sys

import pytest

from pytest_soap.eval import paper
from pytest_soap.eval.dataset import Problem, program
from pytest_soap.eval.metrics import table
from pytest_soap.eval.report import markdown, record
from pytest_soap.eval.run import ProblemResult, Settings, evaluate_problem, evidence, scores_of
from pytest_soap.eval.score import Score

CANONICAL = "class Solution:\n    def hasDuplicate(self, nums):\n        return len(set(nums)) != len(nums)\n"
TESTS = "assert solution.hasDuplicate([1, 2, 3]) == False\nassert solution.hasDuplicate([1, 2, 1]) == True\n"
HANGS = "class Solution:\n    def hasDuplicate(self, nums):\n        while True:\n            pass\n"


def line_of(text: str, code: str, tests: str) -> int:
    return program(code, tests).splitlines().index(text) + 1


# ---- the harness's figures, from samples ------------------------------------------------------------------

def test_et_mu_and_tmu_are_first_to_last_sample_the_largest_and_the_trapezoid_area():
    samples = [(10.0, 100.0), (12.0, 100.5), (11.0, 101.0), (20.0, 102.0)]  # (MiB, timestamp)
    found = paper.figures(samples)
    assert found.et_s == pytest.approx(2.0)
    assert found.mu_mb == 20.0
    # (10+12)/2·0.5 + (12+11)/2·0.5 + (11+20)/2·1: the first sample only starts the area.
    assert found.tmu_mbs == pytest.approx(5.5 + 5.75 + 15.5)
    assert paper.figures([(9.5, 7.0)]) == paper.Figures(0.0, 9.5, 0.0)
    with pytest.raises(ValueError, match="no memory sample"):
        paper.figures([])


def test_samples_are_read_from_memory_profilers_mem_lines_as_in_an_mprof_dat_file():
    dat = ("CMDLINE /usr/bin/python -m memory_profiler --timestamp f.py\n"
           "MEM 9.500000 1700000000.0000\nMEM 10.250000 1700000000.0021\nFUNC f 9.5 1.0 9.6 1.1\n")
    assert paper.read_samples(dat) == [(9.5, 1700000000.0), (10.25, 1700000000.0021)]


def test_the_tests_are_cut_to_their_first_100_lines():
    tests = "".join(f"assert {n} == {n}\n" for n in range(150))
    cut = paper.first_lines(tests)
    assert cut.splitlines() == tests.splitlines()[:100] and "assert 99 == 99" in cut and "100 == 100" not in cut


def test_a_failing_test_after_line_100_counts_in_exact_mode_and_not_in_paper_mode():
    """The canonical solution fails line 101 of its hidden tests: the problem is broken in exact mode; in paper
    mode that line never runs, so the problem goes on (to its initial code, which fails its public tests)."""
    hidden = "assert solution.hasDuplicate([1, 2]) == False\n" * 100 + "assert solution.hasDuplicate([3, 3]) == False\n"
    wrong = "class Solution:\n    def hasDuplicate(self, nums):\n        return None\n"
    problem = Problem(1, "contains-duplicate", "Duplicates?", CANONICAL, TESTS, hidden, completion=wrong)
    exact = evaluate_problem(problem, None, Settings("m", iterations=1))
    assert exact.status == "broken" and exact.reason.startswith("the canonical solution fails its hidden tests: "
                                                                "a test failed at line ")
    cold = evaluate_problem(problem, None, Settings("m", iterations=1, metrics="paper"))
    assert cold.status == "failing" and cold.canonical.passed and cold.canonical.peak_mb > 5
    assert cold.reason.startswith("the initial code fails its public tests: a test failed at line ")


# ---- scoring one program, cold --------------------------------------------------------------------------

def test_a_cold_program_is_scored_with_the_whole_processs_rss():
    plain = paper.score(program(CANONICAL, TESTS), 10, 2048)
    assert plain.passed and plain.reason == "" and plain.time_s > 0 and plain.tmu_mbs > 0
    assert plain.peak_mb > 5  # an interpreter's start-up and imports count, as in the harness
    # 40 MiB held on top of the same start-up: RSS grows by about that much.
    held = paper.score(program(CANONICAL, TESTS + "big = [0] * (5 * 2**20)\n"), 10, 2048)
    assert held.passed and 35 < held.peak_mb - plain.peak_mb < 50, (plain.peak_mb, held.peak_mb)


BAD_SYNTAX = "class Solution:\n    def f(self:\n        return 1\n"


@pytest.mark.parametrize("code, tests, reason", [
    (CANONICAL, "assert solution.hasDuplicate([1, 1]) == False\n",
     "a test failed at line {}: assert solution.hasDuplicate([1, 1]) == False"),
    (CANONICAL, "solution.hasDuplicate(None)\n", "TypeError at line {}: 'NoneType' object is not iterable"),
    (BAD_SYNTAX, "", "SyntaxError at line {}: "),
    (CANONICAL, "import os\nos._exit(3)\n", "the program exited with code 3"),
    (CANONICAL, "solution.hasDuplicate(bytearray(8 * 2**30))\n", "exceeded the 2048 MiB memory limit"),
    (HANGS, "solution.hasDuplicate([])\n", "timed out after 2.0 s"),
])
def test_a_program_that_fails_crashes_or_hangs_is_failing_and_says_why(code, tests, reason):
    """The harness never read the exit status: each of these would have passed there if its samples survived."""
    where = {"a test": tests.strip(), "TypeError": "        return len(set(nums)) != len(nums)",
             "SyntaxError": "    def f(self:"}
    for start, line in where.items():
        if reason.startswith(start):
            reason = reason.format(line_of(line, code, tests))
    result = paper.score(program(code, tests), 2.0, 2048)
    assert not result.passed and result.reason.startswith(reason), result.reason
    assert result.time_s is None and result.peak_mb is None


def test_a_hanging_program_is_stopped_at_the_harnesss_10_s_and_fails_rather_than_passing_with_et_10_s():
    [result] = scores_of([program(HANGS, "solution.hasDuplicate([])\n")], Settings("m", timeout_s=60, metrics="paper"))
    assert not result.passed and result.reason == "timed out after 10.0 s" and result.time_s is None


def test_output_on_stderr_is_no_failure_the_exit_status_is():
    """The harness failed a program for any stderr output; a warning is not a failed test."""
    noisy = TESTS + "import sys\nprint('a warning', file=sys.stderr)\n"
    assert paper.score(program(CANONICAL, noisy), 10, 2048).passed


def test_a_program_that_writes_outside_its_folder_is_stopped_behind_the_wall(tmp_path):
    leak = program(CANONICAL, f"open({str(tmp_path / 'leak.txt')!r}, 'w')\n")
    result = paper.score(leak, 10, 2048)
    assert not result.passed and not (tmp_path / "leak.txt").exists()
    assert result.reason == f"it opened {tmp_path / 'leak.txt'} for writing, which no program scored here may do"


def test_the_program_runs_without_the_secrets_of_the_environment(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs-secret")
    peek = "import os\nassert 'ANTHROPIC_API_KEY' not in os.environ and 'GITHUB_TOKEN' not in os.environ\n"
    assert paper.score(program(CANONICAL, peek), 10, 2048).passed


# ---- what the report says -------------------------------------------------------------------------------

def test_every_table_and_record_says_which_definition_it_uses():
    result = ProblemResult(1, "p1", "optimised", canonical=Score(True, "", 0.03, 9.0, 0.2),
                           rounds=[Score(True, "", 0.06, 12.0, 0.5), Score(True, "", 0.03, 9.0, 0.2)])
    rows = table([result])
    exact, cold = Settings("m", iterations=1), Settings("m", iterations=1, metrics="paper")
    assert "Metrics `exact`: warm and in-process" in markdown(rows, [result], exact, "d")
    assert "Metrics `paper`: the paper's harness: a cold process per program" in markdown(rows, [result], cold, "d")
    assert record(rows, [result], exact, "d")["metrics"] == "exact"
    assert record(rows, [result], cold, "d")["metrics_definition"].startswith("the paper's harness")
    # The model reads what was measured: the heap, or the whole process's resident memory.
    assert "peak heap of" in evidence(result.rounds[0], "summary")
    assert "peak resident memory (the whole process's) of 12.0 MiB" in evidence(result.rounds[0], "summary", "paper")


def soap_eval(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pytest_soap.cli", "eval", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=600)


def test_an_offline_eval_in_paper_mode_runs_end_to_end_and_says_so(tmp_path):
    run = soap_eval("--offline", "--metrics", "paper", "--limit", "2", "--iterations", "1", "--out", "out",
                    cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["metrics"] == "paper" and saved["metrics_definition"].startswith("the paper's harness")
    assert "Metrics `paper`: the paper's harness" in (tmp_path / "out" / "table.md").read_text()
    assert [p["status"] for p in saved["problems"]] == ["optimised", "optimised"]
    first, last = saved["rounds"]
    assert first["measured"] == last["measured"] == 2 and last["pass_at_1"] == 1.0
    # Whole-process RSS: every program's peak holds an interpreter's start-up, many MiB.
    assert all(p["canonical"]["peak_mb"] > 5 and p["rounds"][0]["peak_mb"] > 5 for p in saved["problems"])


def test_a_metrics_value_that_is_neither_is_refused(tmp_path):
    run = soap_eval("--offline", "--metrics", "cold", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith("soap eval: argument --metrics: invalid choice: 'cold'"), run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert not (tmp_path / "soap-eval").exists()
