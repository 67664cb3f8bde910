"""`soap eval`: EffiBench records through the real loop, every round scored on the hidden tests in the sandbox,
and the paper's table. The model is the real anthropic SDK talking to a loopback Messages API."""

import json
import os
import subprocess
import sys
import textwrap
import types
import xml.etree.ElementTree as ET

import pytest

from pytest_soap.eval.dataset import DatasetError, Problem, load, program
from pytest_soap.eval.metrics import table
from pytest_soap.eval.report import markdown, svg
from pytest_soap.eval.run import ProblemResult, Settings, evaluate
from pytest_soap.eval.score import Score, score, score_all
from pytest_soap.soap.llm import AnthropicProvider
from pytest_soap.soap.loopback import MessagesServer


def solution(method: str, body: str) -> str:
    return f"class Solution:\n    def {method}(self, nums):\n" + textwrap.indent(textwrap.dedent(body), " " * 8)


DUPLICATES = {
    "problem_idx": 1, "task_name": "contains-duplicate",
    "description": "Return True when some value appears at least twice in `nums`.",
    "canonical_solution": solution("hasDuplicate", "return len(set(nums)) != len(nums)\n"),
    "completion": solution("hasDuplicate", """\
        seen = []
        for n in nums:
            if n in seen:
                return True
            seen.append(n)
        return False
        """),
    "small_test_cases": "assert solution.hasDuplicate([1, 2, 3, 1]) == True\n"
                        "assert solution.hasDuplicate(list(range(2000))) == False\n",
    "test_case": "assert solution.hasDuplicate([1, 2, 3]) == False\n"
                 "assert solution.hasDuplicate(list(range(4000))) == False\n"
                 "assert solution.hasDuplicate(list(range(3000)) + [5]) == True\n",
}
RUNNING_SUM = {
    "problem_idx": 2, "task_name": "running-sum", "description": "The prefix sums of `nums`.",
    "canonical_solution": solution("runningSum", "return list(accumulate(nums))\n"),
    "completion": solution("runningSum", "return [sum(nums[:i + 1]) for i in range(len(nums))]\n"),
    "small_test_cases": "assert solution.runningSum([1, 2, 3]) == [1, 3, 6]\n"
                        "assert solution.runningSum(list(range(1500)))[-1] == 1124250\n",
    "test_case": "assert solution.runningSum([]) == []\nassert solution.runningSum(list(range(3000)))[-1] == 4498500\n",
}
WRONG = {**RUNNING_SUM, "problem_idx": 3, "task_name": "running-sum-off-by-one",
         "completion": solution("runningSum", "return [sum(nums[:i]) for i in range(len(nums))]\n")}
HANGS = {**RUNNING_SUM, "problem_idx": 4, "task_name": "running-sum-forever",
         "completion": solution("runningSum", "while True:\n    pass\n")}


def reply(code: str) -> str:
    return f"Here it is.\n\n```python\n{code}```\n"


def write_dataset(path, *records, jsonl=True):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n" if jsonl else json.dumps(list(records)))
    return path


def soap_eval(*args, cwd, env=None):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "pytest_soap.cli", "eval", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# ---- the whole eval -------------------------------------------------------------------------------------

def test_an_offline_eval_prints_the_papers_table_and_writes_the_json_and_the_plot(tmp_path):
    data = write_dataset(tmp_path / "mini.jsonl", DUPLICATES, RUNNING_SUM, WRONG, HANGS)
    # 10 s: with two suites and a busy loop on 2 cores, a canonical solution's hidden tests once took over 3 s.
    run = soap_eval(str(data), "--offline", "--iterations", "2", "--timeout", "10", "--out", "out", cwd=tmp_path,
                    env={"ANTHROPIC_API_KEY": ""})
    assert run.returncode == 0, run.stderr
    assert "| round | pass@1 | ET (s) | NET | MU (MiB) | NMU | TMU (MiB·s) | NTMU |" in run.stdout
    assert "| 0 (initial) | 50.0% (2/4) |" in run.stdout and "| 2 | 50.0% (2/4) |" in run.stdout
    assert "| 3 running-sum-off-by-one | failing: the initial code fails its public tests: a test failed at line" in run.stdout
    assert "| 4 running-sum-forever | failing: the initial code fails its public tests: timed out after 10.0 s |" in run.stdout
    record = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [p["status"] for p in record["problems"]] == ["optimised", "optimised", "failing", "failing"]
    assert [len(p["rounds"]) for p in record["problems"]] == [3, 3, 3, 3]
    first, last = record["rounds"][0], record["rounds"][-1]
    assert first["measured"] == 2 and first["pass_at_1"] == 0.5
    # The canonical solution replaced each O(n^2) completion: far faster than round 0.
    assert last["net"] < first["net"] / 3 and last["ntmu"] < first["ntmu"] / 3
    for p in record["problems"][:2]:
        assert p["loop"]["status"] == "accepted" and p["loop"]["candidates"][0]["status"] == "accepted"
        assert "set(nums)" in p["final_code"] or "accumulate" in p["final_code"]
    assert (tmp_path / "out" / "table.md").read_text() in run.stdout
    plot = ET.parse(tmp_path / "out" / "metrics.svg").getroot()
    assert len(plot.findall("{http://www.w3.org/2000/svg}polyline")) == 3


def test_on_the_bundled_dataset_canonical_replies_bring_net_and_ntmu_from_far_above_to_about_1(tmp_path):
    # The four problems whose canonical solutions run longest (2 to 10 ms): the ratio of sums is the paper's.
    # After the loop the canonical solution is scored against itself, so NET and NTMU are 1 but for noise: on an
    # idle machine within 10% (benchmarks and the README give the figures), but 0.84 and 1.30 once with both cores
    # busy. A test must not hang on the machine's mood: the band is a factor of 2, while the completions read 10-20x.
    run = soap_eval("--offline", "--problems", "9,13,18,20", "--iterations", "1", "--out", "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [p["idx"] for p in record["problems"]] == [9, 13, 18, 20]
    first, last = record["rounds"]
    assert first["measured"] == last["measured"] == 4 and last["pass_at_1"] == 1.0
    assert first["net"] > 5 and first["ntmu"] > 5, (first["net"], first["ntmu"])  # the inefficient completions
    assert 0.5 <= last["net"] <= 2 and 0.5 <= last["ntmu"] <= 2, (last["net"], last["ntmu"])


@pytest.mark.parametrize("args, message", [
    (["missing.jsonl"], "soap eval: cannot read missing.jsonl: No such file or directory"),
    (["bad.jsonl"], "soap eval: bad.jsonl, line 2, is not a JSON record: "),
    (["lacking.jsonl"], "soap eval: lacking.jsonl: record 1 lacks test_case (EffiBench's format needs "),
    (["undescribed.jsonl"], "soap eval: undescribed.jsonl: record 1 lacks markdown_description or description "),
    (["pointer.json"], "soap eval: pointer.json is a Git LFS pointer for a file of 87,339,856 bytes, not the "
                       "dataset: run `git lfs pull` in its repository"),
    (["mini.jsonl", "--problems", "1,9"], "soap eval: no problem_idx 9 in the dataset"),
    (["mini.jsonl", "--iterations", "0"], "soap eval: --iterations, --timeout and --limit must be positive"),
    (["mini.jsonl"], "soap eval: optimisation skipped: ANTHROPIC_API_KEY is not set"),
    (["mini.jsonl", "--offline", "--out", "mini.jsonl"], "soap eval: cannot write to mini.jsonl: File exists"),
])
def test_a_bad_dataset_option_or_missing_key_is_a_one_line_error(tmp_path, args, message):
    write_dataset(tmp_path / "mini.jsonl", DUPLICATES)
    (tmp_path / "bad.jsonl").write_text(json.dumps(DUPLICATES) + "\n{not json\n")
    write_dataset(tmp_path / "lacking.jsonl", {k: v for k, v in DUPLICATES.items() if k != "test_case"})
    write_dataset(tmp_path / "undescribed.jsonl", {k: v for k, v in DUPLICATES.items() if k != "description"})
    # What a clone of EffiBench's repository holds without git-lfs: its data/dataset.json, 133 bytes.
    (tmp_path / "pointer.json").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:2bbf3ca1fafa12a0"
                                           "6eccec70e10758f32945248c5dba7867686e44cb06804d80\nsize 87339856\n")
    run = soap_eval(*args, cwd=tmp_path, env={"ANTHROPIC_API_KEY": ""})
    assert run.returncode == 2
    assert run.stderr.startswith(message) and run.stderr.count("\n") == 1, run.stderr
    assert not (tmp_path / "soap-eval").exists()


# ---- the loop, scripted -----------------------------------------------------------------------------------

def evaluate_with(records, script, tmp_path, **settings):
    problems = load(write_dataset(tmp_path / "data.json", *records, jsonl=False))
    with MessagesServer(script) as server:
        provider = AnthropicProvider(api_key="sk-test", base_url=server.url, timeout=10, max_retries=0)
        results = evaluate(problems, provider, Settings(**{"model": "claude-test", "iterations": 1, **settings}))
    return results, server


def test_without_a_completion_the_model_writes_the_initial_code_which_the_loop_then_improves(tmp_path):
    record = {k: v for k, v in DUPLICATES.items() if k != "completion"}
    [result], server = evaluate_with([record], [reply(DUPLICATES["completion"]), reply(DUPLICATES["canonical_solution"])],
                                     tmp_path, model="claude-sonnet-5-5")
    assert "contains-duplicate" in json.dumps(server.requests[0].body) and "hasDuplicate" in json.dumps(server.requests[0].body)
    assert result.status == "optimised" and [s.passed for s in result.rounds] == [True, True]
    assert result.loop["candidates"][0]["status"] == "accepted" and "set(nums)" in result.final_code
    # The initial code's tokens and the loop's, and what they cost at list prices.
    assert result.tokens["input"] > result.loop["tokens"]["input"] > 0 and result.tokens["output"] > 0
    assert result.cost_usd > result.loop["cost_usd"] > 0
    assert f"about ${result.cost_usd:.4f} at list prices" in markdown(table([result]), [result], Settings("m"), "d")


# A record as the paper's code reads it: the task in markdown_description only, and a canonical solution that
# uses names only EffiBench's prelude gives it (random's randint, datetime's date and timedelta, re's findall,
# and the modules datetime and random themselves).
PAPER_RECORD = {
    "problem_idx": 7, "task_name": "day-after", "markdown_description": "The day after each date, as text.",
    "canonical_solution": """\
class Solution:
    def dayAfter(self, days):
        seed = randint(0, 0)
        shifted = [date(*map(int, findall(r"[0-9]+", d))) + timedelta(days=1 + seed) for d in days]
        return [datetime.date.isoformat(d) for d in shifted] if random.random() < 2 else []
""",
    "small_test_cases": "assert solution.dayAfter(['2024-02-28']) == ['2024-02-29']\n",
    "test_case": "assert solution.dayAfter(['2023/12/31', '2024.03.01']) == ['2024-01-01', '2024-03-02']\n",
}


def test_records_in_the_papers_format_pass_the_canonical_check_and_say_which_description_they_used(tmp_path):
    problems = load(write_dataset(tmp_path / "paper.jsonl", PAPER_RECORD,
                                  {**DUPLICATES, "markdown_description": "**Duplicates**, in markdown."}))
    assert [p.description for p in problems] == ["The day after each date, as text.", "**Duplicates**, in markdown."]
    assert {p.description_field for p in problems} == {"markdown_description"}  # preferred when both are there
    assert score(program(PAPER_RECORD["canonical_solution"], PAPER_RECORD["test_case"]), 30, 512).passed
    run = soap_eval("paper.jsonl", "--offline", "--problems", "7", "--iterations", "1", "--out", "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert record["problems"][0]["status"] != "broken" and record["descriptions"] == "markdown_description"
    assert "task descriptions from `markdown_description`" in (tmp_path / "out" / "table.md").read_text()


def test_the_prelude_is_the_harnesss_in_its_order():
    """EffiBench's and the SOAP code's harness: star imports, then module imports, then TreeNode, then ListNode.
    The order decides which module's name wins."""
    from pytest_soap.eval.dataset import PRELUDE
    lines = [line for line in PRELUDE.splitlines() if line.startswith(("from ", "import ", "class "))]
    stars = ["typing", "bisect", "collections", "copy", "datetime", "heapq", "math", "re", "string", "random",
             "itertools", "functools", "operator"]
    modules = ["string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "itertools",
               "functools", "operator"]
    assert lines == ([f"from {m} import *" for m in stars] + [f"import {m}" for m in modules]
                     + ["class TreeNode:", "class ListNode:"])
    names: dict = {}
    exec(PRELUDE, names)
    import operator
    # operator's sub and pow over re's and math's; the modules datetime and random over their classes and functions.
    assert names["pow"] is operator.pow and names["sub"] is operator.sub
    assert isinstance(names["datetime"], types.ModuleType) and isinstance(names["random"], types.ModuleType)


def test_a_problem_whose_canonical_solution_fails_is_left_out_before_the_model_is_asked(tmp_path):
    record = {k: v for k, v in DUPLICATES.items() if k != "completion"}
    record["canonical_solution"] = solution("hasDuplicate", "return False\n")
    [result], server = evaluate_with([record], [reply(DUPLICATES["completion"])], tmp_path)
    assert result.status == "broken" and server.requests == []
    assert result.reason.startswith("the canonical solution fails its hidden tests: a test failed at line ")
    assert table([result]) == []  # nothing to count


def test_a_model_that_writes_no_initial_code_leaves_the_problem_failing_at_every_round(tmp_path):
    record = {k: v for k, v in DUPLICATES.items() if k != "completion"}
    [result], _ = evaluate_with([record], ["I cannot help with that."], tmp_path, iterations=2)
    assert result.status == "failing"
    assert result.reason == "the initial code fails its public tests: no initial code: the reply has no ```python block"
    assert [s.passed for s in result.rounds] == [False, False, False]
    [row0, _, row2] = table([result])
    assert (row0.passed, row0.problems, row0.measured, row0.net) == (0, 1, 0, None) and row2.passed == 0


@pytest.mark.parametrize("view, present, absent", [
    ("both", ["Overhead profile", "MiB @peak", "share"], []),
    ("time", ["Overhead profile", "share"], ["MiB @peak"]),
    ("memory", ["Overhead profile", "MiB @peak"], ["share"]),
    ("summary", ["Overhead profile", "peak heap"], ["MiB @peak", "share"]),
    ("none", [], ["Overhead profile", "MiB @peak", "peak heap"]),
])
def test_each_ablation_gives_the_model_its_part_of_the_profile_and_the_task(tmp_path, view, present, absent):
    _, server = evaluate_with([DUPLICATES], [reply(DUPLICATES["canonical_solution"])], tmp_path, profile=view)
    asked = json.dumps(server.requests[0].body, ensure_ascii=False)
    assert "Return True when some value appears at least twice" in asked  # the task
    assert "solution.hasDuplicate(list(range(2000)))" in asked  # the public tests
    assert "range(4000)" not in asked  # never the hidden tests
    assert all(word in asked for word in present) and not any(word in asked for word in absent)


def test_a_kept_revision_that_hangs_on_the_hidden_tests_is_stopped_and_counted_as_failing(tmp_path):
    # Correct on every public input (the loop's checks see only those), looping forever past them.
    trap = solution("hasDuplicate", """\
        if len(nums) > 2500:
            while True:
                pass
        return len(set(nums)) != len(nums)
        """)
    [result], _ = evaluate_with([DUPLICATES], [reply(trap)], tmp_path, timeout_s=3.0)
    assert result.loop["candidates"][0]["status"] == "accepted"
    assert result.rounds[0].passed and not result.rounds[1].passed
    assert result.rounds[1].reason == "timed out after 3.0 s"
    assert [row.passed for row in table([result])] == [1, 0]


# ---- scoring one program ---------------------------------------------------------------------------------

def test_a_program_is_scored_with_its_time_peak_and_tmu(tmp_path):
    result = score(program(DUPLICATES["canonical_solution"], DUPLICATES["test_case"]), 30, 2048)
    assert result.passed and result.reason == ""
    assert result.time_s > 0 and result.peak_mb > 0 and result.tmu_mbs > 0
    # A program that holds 40 MiB: the heap, not the interpreter's RSS, is what is measured.
    held = score(program(DUPLICATES["canonical_solution"], "big = [0] * (5 * 2**20)\n"), 30, 2048)
    assert 39 < held.peak_mb < 50


def line_of(text: str, code: str, tests: str) -> int:
    return program(code, tests).splitlines().index(text) + 1


BAD_SYNTAX = "class Solution:\n    def f(self:\n        return 1\n"


@pytest.mark.parametrize("code, tests, reason", [
    (DUPLICATES["canonical_solution"], "assert solution.hasDuplicate([1, 1]) == False\n",
     "a test failed at line {}: assert solution.hasDuplicate([1, 1]) == False"),
    (DUPLICATES["canonical_solution"], "solution.hasDuplicate(None)\n",
     "TypeError at line {}: 'NoneType' object is not iterable"),
    (BAD_SYNTAX, "", "SyntaxError at line {}: "),
    (solution("hasDuplicate", "while True:\n    pass\n"), "solution.hasDuplicate([])\n", "timed out after 3.0 s"),
    (solution("hasDuplicate", "return bytearray(8 * 2**30)\n"), "solution.hasDuplicate([])\n",
     "exceeded the 2048 MiB memory limit"),
])
def test_a_failing_hanging_or_hungry_program_is_contained_and_says_why(code, tests, reason):
    where = {"a test": tests.strip(), "TypeError": "        return len(set(nums)) != len(nums)",
             "SyntaxError": "    def f(self:"}
    for start, line in where.items():
        if reason.startswith(start):
            reason = reason.format(line_of(line, code, tests))
    result = score(program(code, tests), 3.0, 2048)
    assert not result.passed and result.reason.startswith(reason), result.reason
    assert result.time_s is None


def test_programs_scored_together_keep_their_own_results_and_one_that_hangs_is_found_alone():
    fast = program(DUPLICATES["canonical_solution"], DUPLICATES["test_case"])
    slow = program(DUPLICATES["completion"], DUPLICATES["test_case"])
    wrong = program(DUPLICATES["canonical_solution"], "assert solution.hasDuplicate([2, 2]) == False\n")
    together = score_all([fast, wrong, slow], 30, 2048)
    assert [s.passed for s in together] == [True, False, True] and together[1].reason.startswith("a test failed")
    assert together[2].time_s > together[0].time_s  # the O(n^2) scan over 4000 items against a set
    hangs = program(solution("hasDuplicate", "while True:\n    pass\n"), "solution.hasDuplicate([])\n")
    alone = score_all([fast, hangs], 2.0, 2048)
    assert alone[0].passed and alone[0].time_s > 0
    assert not alone[1].passed and alone[1].reason == "timed out after 2.0 s"


def test_a_program_that_ends_the_interpreter_is_reported_as_such():
    result = score(program(DUPLICATES["canonical_solution"], "import os\nos._exit(3)\n"), 30, 2048)
    assert not result.passed and result.reason.startswith("the scorer exited with code 3"), result.reason


def test_a_program_that_writes_outside_its_folder_is_stopped_behind_the_wall(tmp_path):
    fast = program(DUPLICATES["canonical_solution"], DUPLICATES["test_case"])
    leak = program(DUPLICATES["canonical_solution"], f"open({str(tmp_path / 'leak.txt')!r}, 'w')\n")
    scores = score_all([fast, leak], 30, 2048)
    assert scores[0].passed and not scores[1].passed and not (tmp_path / "leak.txt").exists()
    assert scores[1].reason == f"it opened {tmp_path / 'leak.txt'} for writing, which no program scored here may do"


def test_the_program_runs_without_the_secrets_of_the_environment(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs-secret")
    peek = "import os\nassert 'ANTHROPIC_API_KEY' not in os.environ and 'GITHUB_TOKEN' not in os.environ\n"
    assert score(program(DUPLICATES["canonical_solution"], peek), 30, 1024).passed


# ---- the dataset ------------------------------------------------------------------------------------------

def test_json_and_jsonl_read_the_same_and_the_target_is_the_method_the_tests_call(tmp_path):
    a = load(write_dataset(tmp_path / "a.jsonl", DUPLICATES, RUNNING_SUM))
    b = load(write_dataset(tmp_path / "b.json", DUPLICATES, RUNNING_SUM, jsonl=False))
    assert a == b and [p.method for p in a] == ["hasDuplicate", "runningSum"]
    assert a[0].completion == DUPLICATES["completion"]


@pytest.mark.parametrize("content, message", [
    ("", "holds no problems"),
    ("[1, 2]", "record 1 is not a JSON object"),
    ("[{\"problem_idx\": 1}", "is not valid JSON"),
    (json.dumps([{**DUPLICATES, "problem_idx": "one"}]), "record 1's problem_idx is not a number: 'one'"),
    (json.dumps([{**DUPLICATES, "test_case": ["assert 1"]}]), "record 1's test_case must be text"),
    (json.dumps([DUPLICATES, DUPLICATES]), "problem_idx 1 appears twice"),
])
def test_a_bad_record_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        load(path)
    assert "\n" not in str(caught.value)


def test_tests_that_never_call_the_solution_name_no_target():
    problem = Problem(5, "nothing", "", "", "assert True", "assert True")
    with pytest.raises(DatasetError, match=r"problem 5 \(nothing\): its tests never call solution.<method>"):
        problem.method  # noqa: B018 - the property raises


# ---- the metrics, on synthetic scores (no timing) -------------------------------------------------------------

def scored(idx, canonical, *rounds, status="optimised"):
    return ProblemResult(idx, f"p{idx}", status, canonical=Score(True, "", *canonical),
                         rounds=[Score(True, "", *r) if r else Score(False, "failed") for r in rounds])


def test_the_table_is_pass_at_1_means_and_ratios_of_sums_over_the_problems_correct_at_every_round():
    results = [
        scored(1, (1.0, 10.0, 5.0), (4.0, 40.0, 20.0), (2.0, 10.0, 6.0)),
        scored(2, (0.1, 2.0, 0.1), (0.2, 2.0, 0.3), (0.1, 2.0, 0.1)),
        scored(3, (1.0, 1.0, 1.0), (9.0, 9.0, 9.0), None),  # fails the hidden tests after round 1: left out
        scored(4, (1.0, 1.0, 1.0), None, None, status="failing"),  # counted, not measured
        ProblemResult(5, "p5", "broken", canonical=Score(False, "bad")),  # neither
    ]
    row0, row1 = table(results)
    assert (row0.passed, row0.problems, row0.measured) == (3, 4, 2) and row0.pass_at_1 == 0.75
    assert (row1.passed, row1.pass_at_1) == (2, 0.5)
    assert row0.et == pytest.approx(2.1) and row0.mu == pytest.approx(21.0) and row0.tmu == pytest.approx(10.15)
    assert row0.net == pytest.approx(4.2 / 1.1) and row0.nmu == pytest.approx(42 / 12) and row0.ntmu == pytest.approx(20.3 / 5.1)
    assert row1.net == pytest.approx(2.1 / 1.1) and row1.nmu == pytest.approx(1.0) and row1.ntmu == pytest.approx(6.1 / 5.1)
    text = markdown([row0, row1], results, Settings("m", iterations=1), "synthetic")
    assert "| 0 (initial) | 75.0% (3/4) | 2.1000 | 3.82 | 21.00 | 3.50 | 10.1500 | 3.98 |" in text
    assert "on the 2 problems correct at every round: ET −50.0%, MU −71.4%, TMU −70.0%." in text, text


def test_the_plot_draws_each_normalised_metric_by_round():
    results = [scored(1, (1.0, 10.0, 5.0), (4.0, 40.0, 20.0), (2.0, 10.0, 6.0), (1.0, 10.0, 5.0))]
    root = ET.fromstring(svg(table(results), "t"))
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 3 and all(len(line.get("points").split()) == 3 for line in lines)
    # NET falls 4 -> 2 -> 1: each point is lower on the page (larger y) than the one before.
    ys = [float(p.split(",")[1]) for p in lines[0].get("points").split()]
    assert ys[0] < ys[1] < ys[2]
