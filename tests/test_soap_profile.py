"""The overhead profile: real pytest subprocesses profiling a small project line by line (shares, orderings,
hit counts and allocated bytes, never an absolute time), and the text the model reads, on synthetic profiles."""

import json
import os
import textwrap

import pytest

from pytest_soap.soap.profile import LineCost, OverheadProfile, ProfileError, format_profile, profile_target

CALC = """
    import functools


    def hot(n):
        setup = list(range(n))
        total = 0
        for i in setup:
            for j in range(20):
                total += sum(k * k for k in range(200))
        return total


    def build(n):
        small = [0] * 10
        big = [0] * n
        return len(big) + len(small)


    def unused():
        return 1


    def logged(function):
        @functools.wraps(function)
        def wrapper(*args):
            return function(*args)
        return wrapper


    class Grid:
        def __init__(self):
            self.rows = []

        @logged
        def fill(self, n):
            cells = []
            for i in range(n):
                cells.append([i] * 100)
            self.rows = cells
            return len(cells)
"""

TESTS = """
    from pkg import calc


    def test_hot():
        assert calc.hot(30) > calc.hot(10)


    def test_build():
        assert calc.build(2_000_000) == 2_000_010


    def test_grid():
        grid = calc.Grid()
        for _ in range(3):
            assert grid.fill(1000) == 1000
"""

MORE_TESTS = """
    import os
    import time

    from pkg import calc


    def test_fails():
        assert calc.build(1000) == 0


    def test_lazy():
        import pkg.lazy

        assert pkg.lazy.squares(4) == [0, 1, 4, 9]


    def test_sleeps():
        with open(os.environ["SOAP_PID_FILE"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    write(root / "pyproject.toml", """
        [tool.pytest.ini_options]
        pythonpath = ["."]
    """)
    write(root / "pkg" / "__init__.py", "")
    write(root / "pkg" / "calc.py", CALC)
    write(root / "pkg" / "lazy.py", """
        def squares(n):
            return [i * i for i in range(n)]
    """)
    write(root / "tests" / "test_calc.py", TESTS)
    write(root / "tests" / "test_more.py", MORE_TESTS)
    return root


def profile(project, qualname, *nodeids, env=None, timeout_s=60.0):
    return profile_target(project, "pkg/calc.py", qualname, list(nodeids), timeout_s, env=env)


def line(p: OverheadProfile, text: str) -> LineCost:
    return next(cost for cost in p.lines if cost.text.strip() == text)


def test_the_hot_line_of_a_nested_loop_gets_the_largest_share(project):
    p = profile(project, "hot", "tests/test_calc.py::test_hot")
    hottest = max(p.lines, key=lambda cost: cost.share)
    assert hottest.text.strip() == "total += sum(k * k for k in range(200))"
    assert hottest.hits == (30 + 10) * 20
    assert p.calls == 2
    assert [cost.lineno for cost in p.lines] == sorted(cost.lineno for cost in p.lines)
    assert sum(cost.share for cost in p.lines) == pytest.approx(1.0)
    assert p.notes == []


def test_the_line_that_builds_a_big_list_allocates_most(project):
    p = profile(project, "build", "tests/test_calc.py::test_build")
    biggest = max(p.lines, key=lambda cost: cost.alloc_mb)
    assert biggest.text.strip() == "big = [0] * n"
    assert biggest.alloc_mb > 15  # two million 8-byte pointers
    assert line(p, "small = [0] * 10").alloc_mb < 0.01
    assert p.peak_mb > 15


def test_a_decorated_method_is_profiled_by_its_class_and_name(project):
    p = profile(project, "Grid.fill", "tests/test_calc.py")
    assert (p.qualname, p.calls) == ("Grid.fill", 3)
    source = (project / "pkg" / "calc.py").read_text().splitlines()
    assert source[p.first_lineno - 1].strip() == "@logged"
    appended = line(p, "cells.append([i] * 100)")
    assert appended.hits == 3 * 1000
    assert max(p.lines, key=lambda cost: cost.alloc_mb) is appended
    # the other tests never called it, so their memory is not in the peak: build's 15 MiB list is missing
    assert p.peak_mb < 15


def test_a_target_the_tests_never_call_is_an_error(project):
    with pytest.raises(ProfileError, match=r"^the tests never called pkg/calc.py::unused$"):
        profile(project, "unused", "tests/test_calc.py::test_hot")


@pytest.mark.parametrize("qualname, message", [
    ("missing", "pkg/calc.py has no missing"),
    ("Grid.rows", "pkg/calc.py has no Grid.rows"),
    ("functools", "pkg/calc.py::functools is not a Python function"),
])
def test_a_target_that_is_not_there_is_a_one_line_error(project, qualname, message):
    with pytest.raises(ProfileError) as error:
        profile(project, qualname, "tests/test_calc.py::test_hot")
    assert str(error.value) == message


def test_a_module_the_tests_import_only_when_they_run_is_imported_by_its_dotted_name(project):
    p = profile_target(project, "pkg/lazy.py", "squares", ["tests/test_more.py::test_lazy"], 60)
    assert (p.calls, [cost.text.strip() for cost in p.lines]) == (1, ["return [i * i for i in range(n)]"])


def test_a_bad_node_id_is_a_one_line_error(project):
    with pytest.raises(ProfileError, match=r"^pytest stopped \(exit code 4\): ERROR: not found: .*::test_nothing$"):
        profile(project, "hot", "tests/test_calc.py::test_nothing")


def test_failing_tests_still_give_a_profile_with_a_note(project):
    p = profile(project, "build", "tests/test_more.py::test_fails")
    assert p.calls == 1
    assert line(p, "big = [0] * n").hits == 1
    assert len(p.notes) == 1 and p.notes[0].startswith("the tests did not all pass (1 failed")


def test_a_timeout_stops_the_tests_with_a_one_line_error(project, tmp_path):
    pid_file = tmp_path / "pid"
    env = {**os.environ, "SOAP_PID_FILE": str(pid_file)}
    with pytest.raises(ProfileError, match=r"^the tests took longer than 4 s under the line profiler; stopped$"):
        profile(project, "hot", "tests/test_more.py::test_sleeps", env=env, timeout_s=4)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # the test's process is gone, not left sleeping


def test_a_malformed_target_option_is_a_usage_error(pytester):
    result = pytester.runpytest("-p", "pytest_soap.soap.lineprof", "--soap-line-target=pkg/calc.py",
                                "--soap-line-out=profile.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-soap: --soap-line-target wants FILE::QUALNAME, not 'pkg/calc.py'"])


SYNTHETIC = OverheadProfile(
    "pkg/stats.py", "Stats.slow_sum", 10, calls=41, total_s=0.1824, peak_mb=12.34,
    lines=[
        LineCost(11, "        total = 0", 41, 0.0001, 0.0005, 0.0),
        LineCost(12, "        for x in sorted(items):", 41041, 0.012, 0.0658, 3.2),
        LineCost(13, "            total += x * x", 41000, 0.12, 0.658, 0.0),
        LineCost(14, "            if x < 0:", 41000, 0.03, 0.1645, 0.0),
        LineCost(15, "                seen = [x] * 1000", 5, 0.0001, 0.0005, 8.0),
        LineCost(16, "        return total", 41, 0.00002, 0.0001, 0.01),
    ],
    notes=["the tests did not all pass (1 failed, 2 passed in 0.31s): the profile covers the calls made"],
)


def test_the_text_shows_the_lines_that_cost_most_in_time_or_memory_in_code_order():
    # 15 allocates most, 13 takes most time, 12 is second in memory; 11, 14 and 16 are left out.
    assert format_profile(SYNTHETIC, max_lines=3) == textwrap.dedent("""\
        pkg/stats.py::Stats.slow_sum — 41 calls, 182.4 ms total, peak heap 12.3 MiB
        line   hits      time  share  MiB @peak  code
           …
          12  41041   12.0 ms   6.6%        3.2  for x in sorted(items):
          13  41000  120.0 ms  65.8%          -      total += x * x
           …
          15      5    0.1 ms   0.1%        8.0          seen = [x] * 1000
           …
        note: the tests did not all pass (1 failed, 2 passed in 0.31s): the profile covers the calls made""")


def test_the_text_of_a_short_function_shows_every_line():
    text = format_profile(SYNTHETIC).splitlines()
    assert "…" not in "\n".join(text)
    assert [row.split()[0] for row in text[2:8]] == ["11", "12", "13", "14", "15", "16"]
    assert text[7] == "  16     41    0.0 ms   0.0%       <0.1  return total"


def test_a_profile_survives_a_round_trip_through_json():
    assert OverheadProfile.from_dict(json.loads(json.dumps(SYNTHETIC.to_dict()))) == SYNTHETIC


def test_each_view_shows_what_the_papers_ablation_gives_the_model():
    header = "pkg/stats.py::Stats.slow_sum — 41 calls, 182.4 ms total, peak heap 12.3 MiB"
    note = "note: " + SYNTHETIC.notes[0]
    # Time only: the time columns, and the lines ranked by time (13, 14, 12), not by allocation.
    assert format_profile(SYNTHETIC, max_lines=3, view="time") == textwrap.dedent(f"""\
        {header}
        line   hits      time  share  code
           …
          12  41041   12.0 ms   6.6%  for x in sorted(items):
          13  41000  120.0 ms  65.8%      total += x * x
          14  41000   30.0 ms  16.4%      if x < 0:
           …
        {note}""")
    # Memory only: the allocating lines (15, 12, 16), no time.
    assert format_profile(SYNTHETIC, max_lines=3, view="memory") == textwrap.dedent(f"""\
        {header}
        line   hits  MiB @peak  code
           …
          12  41041        3.2  for x in sorted(items):
           …
          15      5        8.0          seen = [x] * 1000
          16     41       <0.1  return total
        {note}""")
    assert format_profile(SYNTHETIC, view="summary") == f"{header}\n{note}"
    assert format_profile(SYNTHETIC, view="none") == ""
    assert format_profile(SYNTHETIC, max_lines=3, view="both") == format_profile(SYNTHETIC, max_lines=3)


def test_the_eval_offers_every_view_of_the_profile():
    from pytest_soap.eval import PROFILES
    from pytest_soap.soap.profile import VIEWS

    assert set(PROFILES) == set(VIEWS)
