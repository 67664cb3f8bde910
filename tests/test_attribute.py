"""Attribution: each regressed test named with the function that caused it, on real git repositories
and real pytest sessions, and the blame rules on synthetic profiles (no timing)."""

import gc
import json
import re
import weakref

import pytest

from pytest_soap.attribute import attribute
from pytest_soap.changes import ChangeSet, FunctionChange
from pytest_soap.measure.functions import Edge, FunctionCost, Namer, Profile
from pytest_soap.report.terminal import cause_lines

from projects import commit, git_project, package_project, write  # tests/projects.py

# commit A: process() calls the unchanged helper 5 times; build() asks allocate() for 8 MiB.
# commit B changes only process() (50 calls) and build() (40 MiB): the time is spent in helper(),
# the memory in allocate(), and neither of those changed.
WORK = """
    import zlib

    def helper(n):
        acc = 0
        for i in range(n):
            acc = (acc * 31 + i) % 1000003
        return acc

    def process():
        return [helper(20000) for _ in range({calls})]

    def allocate(mib):
        return bytearray(mib * 2**20)

    def build():
        data = allocate({mib})
        return len(data)

    def squeeze():
        return zlib.compress(bytes(range(256)) * {blocks}, 9)

    def steady():
        return helper(20000)
"""

TESTS = """
    from pkg import work

    def test_process():
        assert work.process()

    def test_build():
        assert work.build()

    def test_squeeze():
        assert work.squeeze()

    def test_steady():
        assert work.steady()
"""


INI = '[tool.pytest.ini_options]\npythonpath = ["."]\n'  # no testpaths: the tests are found from the rootdir


@pytest.fixture
def project(pytester):
    root = pytester.path
    (root / ".gitignore").write_text("report.json\n.soap/\n")
    pytester.repo = git_project(root, WORK.format(calls=5, mib=8, blocks=2000), TESTS, INI)
    return pytester


def first_causes(report):
    """For each test, the first entry of `functions` naming it: the one most to blame."""
    firsts = {}
    for entry in report["functions"]:
        for nodeid in entry["tests"]:
            firsts.setdefault(nodeid.split("::")[-1], entry)
    return firsts


def test_against_a_ref_the_changed_caller_is_blamed_before_the_unchanged_helper(project):
    write(project.path / "pkg" / "work.py", WORK.format(calls=50, mib=40, blocks=200000))
    commit(project.repo, "B: more calls, more memory, more to compress")
    result = project.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    report = json.loads((project.path / "report.json").read_text())
    assert {"tests/test_work.py::test_process", "tests/test_work.py::test_build"} <= set(report["regressions"])
    firsts = first_causes(report)
    assert firsts["test_process"]["qualname"] == "process" and firsts["test_process"]["changed"] is True
    assert firsts["test_process"]["file"] == "pkg/work.py"
    evidence = firsts["test_process"]["evidence"]["tests/test_work.py::test_process"]
    assert evidence["share"] > 0.5 and evidence["delta_cum_s"] > 0 and "both sides" in evidence["basis"]
    # The helper, where the time was spent, is named too, unchanged and explained by its caller.
    helper = next(e for e in report["functions"] if e["qualname"] == "helper")
    assert helper["changed"] is False
    assert "process" in helper["evidence"]["tests/test_work.py::test_process"]["reason"]
    assert helper["evidence"]["tests/test_work.py::test_process"]["within"] == "process"
    assert firsts["test_build"]["qualname"] == "build"
    # zlib's C code did the compressing; the project function that called it is blamed.
    if "tests/test_work.py::test_squeeze" in report["regressions"]:
        assert firsts["test_squeeze"]["qualname"] == "squeeze"
    # No test, and nothing outside the project, is ever blamed.
    assert all(e["file"].startswith("pkg/") for e in report["functions"])
    result.stdout.fnmatch_lines(["*← pkg/work.py:* process  *% of it; changed*", "*(from profiles of both sides*"])


def test_under_xdist_fresh_processes_profile_both_sides_and_the_changed_caller_is_still_blamed(project):
    # Without xdist both sides profile in their warm first-pass processes; its controller runs no test, and
    # each side profiles in a fresh process instead.
    pytest.importorskip("xdist")
    write(project.path / "pkg" / "work.py", WORK.format(calls=50, mib=40, blocks=200000))
    commit(project.repo, "B: more calls, more memory, more to compress")
    result = project.runpytest("-n", "2", "--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    report = json.loads((project.path / "report.json").read_text())
    firsts = first_causes(report)
    assert firsts["test_process"]["qualname"] == "process" and firsts["test_process"]["changed"] is True
    assert "both sides" in firsts["test_process"]["evidence"]["tests/test_work.py::test_process"]["basis"]


def test_with_a_saved_baseline_the_diff_against_its_commit_ranks_the_changed_function_first(project):
    assert project.runpytest("--soap", "--soap-save").ret == pytest.ExitCode.OK
    write(project.path / "pkg" / "work.py", WORK.format(calls=50, mib=8, blocks=2000))
    commit(project.repo, "B: more calls")
    result = project.runpytest("--soap", "--soap-json", "report.json")
    report = json.loads((project.path / "report.json").read_text())
    assert "tests/test_work.py::test_process" in report["regressions"], result.stdout.str()
    first = first_causes(report)["test_process"]
    assert first["qualname"] == "process" and first["changed"] is True
    assert "this side's profile only and the diff against" in first["evidence"]["tests/test_work.py::test_process"]["basis"]


def test_outside_a_git_repository_the_hottest_functions_are_named_and_the_report_says_why(pytester):
    package_project(pytester.path, WORK.format(calls=5, mib=8, blocks=2000), TESTS, INI)
    assert pytester.runpytest("--soap", "--soap-save").ret == pytest.ExitCode.OK
    write(pytester.path / "pkg" / "work.py", WORK.format(calls=50, mib=8, blocks=2000))
    result = pytester.runpytest("--soap", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    report = json.loads((pytester.path / "report.json").read_text())
    first = first_causes(report)["test_process"]
    assert first["qualname"] in ("process", "helper") and first["changed"] is False
    result.stdout.fnmatch_lines(["*this side's profile only*", "*outside a git repository*changed functions are unknown*"])


def test_a_test_whose_own_code_changed_is_said_so(project):
    write(project.path / "tests" / "test_work.py", TESTS.replace("assert work.process()",
                                                                 "assert [work.process() for _ in range(10)]"))
    commit(project.repo, "the test calls process ten times")
    result = project.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*the test's own code changed (test_process)*"])


# ---- the blame rules, on synthetic profiles ---------------------------------------------------------------

def profile(functions, edges, stacks=(), peak=0.0):
    costs = {}
    for key, kind, own, cum in functions:
        file, _, qualname = key.rpartition("::")
        costs[key] = FunctionCost(file or None, qualname, 1, kind, own, cum, 1)
    return Profile(sum(f.own_s for f in costs.values()), costs, [Edge(*e) for e in edges], list(stacks), peak)


def changes(*qualnames):
    return ChangeSet("a" * 40, [FunctionChange("m.py", q, 1, "modified") for q in qualnames], [])


def outer_calling_helper(helper_s):
    """A test calling outer, which spends 10 ms itself and `helper_s` in helper."""
    return profile([("t.py::test", "test", 0.0, helper_s + 0.01), ("m.py::outer", "project", 0.01, helper_s + 0.01),
                    ("m.py::helper", "project", helper_s, helper_s)],
                   [("t.py::test", "m.py::outer", 0.01, helper_s + 0.01), ("m.py::outer", "m.py::helper", helper_s, helper_s)])


def test_a_changed_function_calling_an_unchanged_helper_more_is_blamed_for_the_helpers_time():
    base, head = outer_calling_helper(0.1), outer_calling_helper(1.0)
    a = attribute("t.py::test", ["time_s"], head, base, changes("outer"))
    assert [c.qualname for c in a.causes] == ["outer", "helper"]
    assert a.causes[0].changed and a.causes[0].share == pytest.approx(1.0)
    assert not a.causes[1].changed and "outer" in a.causes[1].reason
    # Nothing changed: the helper's own time rose, and it is named first.
    a = attribute("t.py::test", ["time_s"], head, base, changes())
    assert a.causes[0].qualname == "helper" and "own time" in a.causes[0].reason


def test_time_in_external_code_goes_to_the_project_function_that_called_it():
    base = profile([("m.py::caller", "project", 0.01, 0.11), ("<built-in method zlib.compress>", "external", 0.1, 0.1)],
                   [("m.py::caller", "<built-in method zlib.compress>", 0.1, 0.1)])
    head = profile([("m.py::caller", "project", 0.01, 1.01), ("<built-in method zlib.compress>", "external", 1.0, 1.0)],
                   [("m.py::caller", "<built-in method zlib.compress>", 1.0, 1.0)])
    a = attribute("t.py::test", ["time_s"], head, base, changes())
    assert a.causes[0].qualname == "caller" and a.causes[0].share > 0.9
    assert any("in external code" in note for note in a.notes)


def test_memory_at_the_peak_is_blamed_on_the_innermost_changed_function_of_its_stack():
    functions = [("m.py::build", "project", 0, 0), ("m.py::allocate", "project", 0, 0)]
    base = profile(functions, [], stacks=[(8.0, ["m.py::allocate", "m.py::build"])], peak=8.0)
    head = profile(functions, [], stacks=[(40.0, ["m.py::allocate", "m.py::build"])], peak=40.0)
    base.functions["m.py::build"].peak_mb = base.functions["m.py::allocate"].peak_mb = 8.0
    head.functions["m.py::build"].peak_mb = head.functions["m.py::allocate"].peak_mb = 40.0
    a = attribute("t.py::test", ["peak_mb"], head, base, changes("build"))
    assert a.causes[0].qualname == "build" and a.causes[0].delta_peak_mb == pytest.approx(32.0)
    # Without a change, the function that allocated it.
    assert attribute("t.py::test", ["peak_mb"], head, base, changes()).causes[0].qualname == "allocate"


# ---- shares that add up, and lines that agree with themselves ----------------------------------------------

def assert_adds_up(a):
    """What every attribution keeps: each share is a part of one whole, no time is held twice, and each line's
    reason and figures agree with each other and with its share."""
    assert a.whole > 0
    assert sum(c.share for c in a.causes) <= 1 + 1e-9
    for c in a.causes:
        assert 0 <= c.share <= 1
        if c.within:
            assert c.share == 0 and c.within in {d.qualname for d in a.causes if d.changed}
        elif a.memory:
            assert c.share == pytest.approx(c.delta_peak_mb / a.whole)
        else:
            assert c.share == pytest.approx(c.delta_cum_s / a.whole)
        if not a.memory:
            assert 0 <= c.delta_own_s <= c.delta_cum_s
            if a.rises and not c.within:
                assert c.delta_own_s > 0 if "own time" in c.reason else c.delta_own_s < c.delta_cum_s / 10
                calls = "callees" in c.reason or "external code" in c.reason
                assert c.delta_cum_s > c.delta_own_s if calls else c.delta_cum_s - c.delta_own_s < c.delta_cum_s / 10
    for line in cause_lines(a):
        assert not re.search(r"(^|[ ;(])-\d", line)  # no negative figure beside a share


def test_a_share_stays_within_the_regression_when_other_code_got_faster():
    # a (changed) rose by 20 ms while b got 10 ms faster: the profiles rose by 10 ms, and a is all of the rise,
    # not 200% of it.
    base = profile([("t.py::test", "test", 0.0, 0.04), ("m.py::a", "project", 0.01, 0.01), ("m.py::b", "project", 0.03, 0.03)],
                   [("t.py::test", "m.py::a", 0.01, 0.01), ("t.py::test", "m.py::b", 0.03, 0.03)])
    head = profile([("t.py::test", "test", 0.0, 0.05), ("m.py::a", "project", 0.03, 0.03), ("m.py::b", "project", 0.02, 0.02)],
                   [("t.py::test", "m.py::a", 0.03, 0.03), ("t.py::test", "m.py::b", 0.02, 0.02)])
    a = attribute("t.py::test", ["time_s"], head, base, changes("a"))
    assert [c.qualname for c in a.causes] == ["a"]
    assert a.causes[0].share == pytest.approx(1.0) and a.whole == pytest.approx(0.02)
    assert_adds_up(a)


def test_a_changed_caller_and_the_helper_it_calls_more_never_hold_the_same_time():
    base, head = outer_calling_helper(0.1), outer_calling_helper(1.0)
    a = attribute("t.py::test", ["time_s"], head, base, changes("outer"))
    outer, helper = a.causes
    assert outer.share == pytest.approx(1.0) and outer.delta_cum_s == pytest.approx(0.9)
    # The helper is named beside its caller, its rise in the caller's share: not 90% more on top of it.
    assert helper.share == 0 and helper.within == "outer" and helper.delta_own_s == pytest.approx(0.9)
    assert_adds_up(a)
    lines = cause_lines(a)
    assert "outer  100% of it; changed; time in its callees rose; +900.0 ms with callees" in lines[0]
    assert "helper  in outer's share; unchanged; rose because outer (changed) calls it more; +900.0 ms own" in lines[1]
    assert lines[2].endswith("; shares of +900.0 ms)")


def test_a_helper_called_more_by_a_changed_and_an_unchanged_caller_is_split_between_them():
    edges = lambda n: [("t.py::test", "m.py::outer", 0.0, n), ("t.py::test", "m.py::other", 0.0, n),
                       ("m.py::outer", "m.py::helper", n, n), ("m.py::other", "m.py::helper", n, n)]
    functions = lambda n: [("t.py::test", "test", 0.0, 2 * n), ("m.py::outer", "project", 0.0, n),
                           ("m.py::other", "project", 0.0, n), ("m.py::helper", "project", 2 * n, 2 * n)]
    base, head = profile(functions(0.1), edges(0.1)), profile(functions(0.5), edges(0.5))
    head.functions["m.py::helper"].calls = 5
    a = attribute("t.py::test", ["time_s"], head, base, changes("outer"))
    assert [(c.qualname, c.share) for c in a.causes] == [("outer", pytest.approx(0.5)), ("helper", pytest.approx(0.5))]
    assert_adds_up(a)


def test_a_line_never_says_own_time_rose_beside_an_own_time_that_fell():
    # caller's own time fell by 4 µs; zlib, which it calls, took 10 ms more: that is what it is blamed for.
    zlib = "<built-in method zlib.compress>"
    base = profile([("m.py::caller", "project", 0.000104, 0.011), (zlib, "external", 0.01, 0.01)],
                   [("m.py::caller", zlib, 0.01, 0.01)])
    head = profile([("m.py::caller", "project", 0.0001, 0.0201), (zlib, "external", 0.02, 0.02)],
                   [("m.py::caller", zlib, 0.02, 0.02)])
    a = attribute("t.py::test", ["time_s"], head, base, changes())
    caller = a.causes[0]
    assert caller.reason == "unchanged; time in the external code it calls rose"
    assert caller.delta_own_s == 0 and caller.delta_cum_s == pytest.approx(0.01)
    assert "own" not in cause_lines(a)[0]
    assert_adds_up(a)


def test_an_own_rise_is_never_shown_above_the_rise_with_callees():
    # f's own time rose 12.6 ms while its callee g got 3.7 ms faster (so cProfile's cum rose 8.9 ms only); in a
    # recursive f cProfile's cum may even sit below its own. The figures are what f is blamed for: its own rise.
    base = profile([("t.py::test", "test", 0.0, 0.0137), ("m.py::f", "project", 0.01, 0.0137),
                    ("m.py::g", "project", 0.0037, 0.0037)],
                   [("t.py::test", "m.py::f", 0.01, 0.0137), ("m.py::f", "m.py::g", 0.0037, 0.0037)])
    head = profile([("t.py::test", "test", 0.0, 0.0226), ("m.py::f", "project", 0.0226, 0.02),
                    ("m.py::g", "project", 0.0, 0.0)],
                   [("t.py::test", "m.py::f", 0.0226, 0.0226)])
    a = attribute("t.py::test", ["time_s"], head, base, changes("f"))
    f = a.causes[0]
    assert f.delta_own_s == f.delta_cum_s == pytest.approx(0.0126) and f.share == pytest.approx(1.0)
    assert f.reason == "changed; its own time rose"
    assert cause_lines(a)[0].endswith("; +12.6 ms own")
    assert_adds_up(a)


def test_unchanged_functions_whose_rise_is_within_the_noise_are_not_listed():
    # outer (changed) calls helper ten times as often (+20 ms); grown is called more too (+4 ms). jitter, called
    # as often as before, rose 10% of its 20 ms; tiny rose 0.8 ms, 3% of the regression.
    def side(helper, grown, jitter, tiny, calls):
        fs = [("t.py::test", "test", 0.0, 0.0), ("m.py::outer", "project", 0.0, helper),
              ("m.py::helper", "project", helper, helper), ("m.py::grown", "project", grown, grown),
              ("m.py::jitter", "project", jitter, jitter), ("m.py::tiny", "project", tiny, tiny)]
        edges = [("t.py::test", "m.py::outer", 0.0, helper), ("m.py::outer", "m.py::helper", helper, helper)]
        edges += [("t.py::test", f"m.py::{name}", s, s) for name, s in (("grown", grown), ("jitter", jitter), ("tiny", tiny))]
        p = profile(fs, edges)
        p.functions["m.py::helper"].calls = p.functions["m.py::grown"].calls = calls
        return p

    a = attribute("t.py::test", ["time_s"], side(0.022, 0.006, 0.022, 0.0008, 10), side(0.002, 0.002, 0.02, 0.0, 1),
                  changes("outer"))
    assert [c.qualname for c in a.causes] == ["outer", "helper", "grown"]
    assert a.causes[0].share > a.causes[2].share > 0
    assert_adds_up(a)


def test_memory_shares_stay_within_the_rise_of_the_peak():
    # build (changed) holds 30 MiB more at the peak, keep 20 MiB less: the peak rose by 10 MiB.
    functions = [("m.py::build", "project", 0, 0), ("m.py::keep", "project", 0, 0)]
    base = profile(functions, [], stacks=[(10.0, ["m.py::build"]), (30.0, ["m.py::keep"])], peak=40.0)
    head = profile(functions, [], stacks=[(40.0, ["m.py::build"]), (10.0, ["m.py::keep"])], peak=50.0)
    a = attribute("t.py::test", ["peak_mb"], head, base, changes("build"))
    assert [c.qualname for c in a.causes] == ["build"]
    assert a.causes[0].share == pytest.approx(1.0) and a.causes[0].delta_peak_mb == pytest.approx(30.0)
    assert_adds_up(a)
    assert cause_lines(a)[0].endswith("; +30.0 MiB at the peak")


def test_with_one_side_only_a_caller_and_its_callee_never_hold_the_same_time():
    a = attribute("t.py::test", ["time_s"], outer_calling_helper(1.0), None, changes("outer"))
    assert sum(c.share for c in a.causes) == pytest.approx(1.0)
    assert [c.qualname for c in a.causes] == ["outer", "helper"]
    assert a.causes[0].share == pytest.approx(1.0) and a.causes[1].within == "outer"
    assert_adds_up(a)
    assert "+" not in "".join(cause_lines(a))  # costs in this run, not rises


def test_a_namer_and_the_files_it_read_are_freed_with_it(tmp_path):
    # one Namer per profiled test: its caches must not outlive it
    (tmp_path / "m.py").write_text("def f():\n    return 1\n")
    namer = Namer(tmp_path)
    cost = namer.name(str(tmp_path / "m.py"), 2, "")
    assert (cost.file, cost.qualname) == ("m.py", "f")
    alive = weakref.ref(namer)
    del namer
    gc.collect()
    assert alive() is None
