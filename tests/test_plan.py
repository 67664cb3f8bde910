"""From the gate's attributions to the loop's targets: each regression's alternatives, most to blame first, and
the run that goes on to the next one while a target is skipped."""

import pytest

from pytest_soap import compare
from pytest_soap.attribute import Attribution, Cause
from pytest_soap.records import Measurement, Sample
from pytest_soap.soap import Prior, Related, Target, session
from pytest_soap.soap.loop import Optimization

PARSER = '''class Parser:
    def parse(self, text):
        def gen():
            yield from text.split()
        return list(gen())

    def _advance(self):
        return 1


def helper(x):
    return x
'''


@pytest.fixture
def root(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "parser.py").write_text(PARSER)
    return tmp_path


def verdict(nodeid, *times, ratio=2.0):
    m = Measurement(nodeid, samples=[Sample(t, t) for t in times])
    return compare.TestVerdict(m, None, "regressed", {"time_s": compare.MetricVerdict("time_s", "regressed", 0.01, 0.02, ratio)})


def cause(qualname, share, changed=True, file="pkg/parser.py", **kw):
    return Cause(file, qualname, 1, changed, share=share, **{"delta_cum_s": share, **kw})


def attribution(nodeid, *causes, whole=1.0):
    return Attribution(nodeid, list(causes), whole=whole)


def keys(planned):
    return [t.key for t in planned.alternatives]


def test_a_nested_generator_is_planned_as_the_method_that_defines_it_with_the_rest_as_related(root):
    a = attribution("t.py::test_parse",
                    cause("Parser.parse.<locals>.gen", 0.5), cause("Parser.parse", 0.2),
                    cause("helper", 0.0, changed=False, within="Parser.parse", delta_cum_s=0.25),
                    cause("Parser._advance", 0.05, changed=False))
    [p] = session.plan([a], {"t.py::test_parse": verdict("t.py::test_parse", 0.02, 0.03, 0.04)}, root)
    assert keys(p) == ["pkg/parser.py::Parser.parse", "pkg/parser.py::helper", "pkg/parser.py::Parser._advance"]
    target = p.target
    assert target.tests == target.race == ("t.py::test_parse",)
    assert target.related == (Related("pkg/parser.py", "helper", 0.25, False),  # its rise over the whole
                              Related("pkg/parser.py", "Parser._advance", 0.05, False))
    assert target.revisable == ("helper", "Parser._advance")
    assert target.measured_s == pytest.approx(0.03)  # the median of the gate's runs
    assert p.metrics == ["time_s"] and p.evidence == "t.py::test_parse: time 2.00×"
    assert p.fallbacks[0].related[0] == Related("pkg/parser.py", "Parser.parse", 0.7, True)  # the nested part added


def test_changed_functions_come_first_and_tests_blaming_the_same_function_share_a_plan(root):
    a = attribution("t.py::a", cause("helper", 0.6, changed=False), cause("Parser._advance", 0.3))
    b = attribution("t.py::b", cause("Parser._advance", 0.9), cause("Parser.parse", 0.1))
    c = attribution("t.py::c")  # nothing to blame
    verdicts = {"t.py::a": verdict("t.py::a", 0.1), "t.py::b": verdict("t.py::b", 0.2), "t.py::c": verdict("t.py::c", 1)}
    [p] = session.plan([a, b, c], verdicts, root)
    assert keys(p) == ["pkg/parser.py::Parser._advance", "pkg/parser.py::Parser.parse", "pkg/parser.py::helper"]
    assert p.target.tests == ("t.py::a", "t.py::b") and p.target.measured_s == pytest.approx(0.3)


def test_without_the_gate_s_time_the_measured_time_is_unknown(root):
    a = attribution("t.py::a", cause("helper", 1.0))
    assert session.plan([a], {"t.py::a": verdict("t.py::a")}, root)[0].target.measured_s is None


def fake_loop(monkeypatch, statuses, priors_seen=None):
    """session.optimize answering each target with the status given for its qualname, recording the calls (and
    in `priors_seen`, the earlier revision each target was given)."""
    calls = []

    def optimize(target, provider, model, iterations, metrics, evidence, thresholds, progress, prior=None):
        calls.append(target.qualname)
        if priors_seen is not None:
            priors_seen[target.qualname] = prior
        status = statuses[target.qualname]
        return Optimization(target.file, target.qualname, status, f"{status} by the fake loop")

    monkeypatch.setattr(session, "optimize", optimize)
    return calls


def run(planned, root, lines=None, priors=None):
    return session.run(planned, None, "model", 1, None, root, False, (lines if lines is not None else []).append,
                       priors or {})


def outcomes(result):
    return [(f"{o.file}::{o.qualname}", o.status, o.reason) for o in result.optimizations]


def test_a_skipped_target_hands_over_to_the_next_and_stays_in_the_report(root, monkeypatch):
    calls = fake_loop(monkeypatch, {"Parser.parse": "skipped", "helper": "rejected", "Parser._advance": "accepted"})
    a = attribution("t.py::a", cause("Parser.parse", 0.6), cause("helper", 0.3), cause("Parser._advance", 0.1))
    lines = []
    result = run(session.plan([a], {"t.py::a": verdict("t.py::a", 0.1)}, root), root, lines)
    assert calls == ["Parser.parse", "helper"]  # the first not skipped ends the plan
    assert outcomes(result) == [("pkg/parser.py::Parser.parse", "skipped", "skipped by the fake loop"),
                                ("pkg/parser.py::helper", "rejected", "rejected by the fake loop")]
    assert lines == ["pkg/parser.py::Parser.parse: skipped: skipped by the fake loop"]
    assert result.patch is None


def test_a_target_deleted_on_this_side_or_in_a_c_extension_is_skipped_without_a_loop(root, monkeypatch):
    calls = fake_loop(monkeypatch, {"Parser.parse": "accepted"})
    a = attribution("t.py::a", cause("Parser.gone", 0.4), cause("scan", 0.3, file="pkg/_speedups.cpython-312.so"),
                    cause("lost", 0.2, file="pkg/deleted.py"), cause("Parser.parse", 0.1))
    result = run(session.plan([a], {"t.py::a": verdict("t.py::a", 0.1)}, root), root)
    assert calls == ["Parser.parse"]
    assert outcomes(result) == [
        ("pkg/parser.py::Parser.gone", "skipped", "pkg/parser.py defines no Parser.gone"),
        ("pkg/_speedups.cpython-312.so::scan", "skipped",
         "pkg/_speedups.cpython-312.so is not Python source (a C extension?): the loop revises Python functions"),
        ("pkg/deleted.py::lost", "skipped", "pkg/deleted.py is not in the working tree: deleted or moved on this side"),
        ("pkg/parser.py::Parser.parse", "accepted", "accepted by the fake loop"),
    ]
    assert [r.file for r in session.plan([a], {"t.py::a": verdict("t.py::a")}, root)[0].target.related] == [
        "pkg/deleted.py", "pkg/parser.py"]  # the extension is no context for the model


def test_a_function_two_plans_name_is_run_once(root, monkeypatch):
    calls = fake_loop(monkeypatch, {"Parser.parse": "rejected", "helper": "skipped", "Parser._advance": "accepted"})
    a = attribution("t.py::a", cause("Parser.parse", 0.9))
    b = attribution("t.py::b", cause("helper", 0.8), cause("Parser.parse", 0.1), cause("Parser._advance", 0.1))
    result = run(session.plan([a, b], {"t.py::a": verdict("t.py::a"), "t.py::b": verdict("t.py::b")}, root), root)
    assert calls == ["Parser.parse", "helper", "Parser._advance"]
    assert [o.status for o in result.optimizations] == ["rejected", "skipped", "accepted"]


def test_each_target_is_given_its_own_earlier_revision_and_no_other(root, monkeypatch):
    seen = {}
    fake_loop(monkeypatch, {"Parser.parse": "rejected", "helper": "skipped", "Parser._advance": "accepted"}, seen)
    a = attribution("t.py::a", cause("Parser.parse", 0.9))
    b = attribution("t.py::b", cause("helper", 0.8), cause("Parser.parse", 0.1), cause("Parser._advance", 0.1))
    earlier = Prior("pkg/parser.py", "Parser._advance", "# the module, revised\n", "commit 0123456789ab", 900)
    run(session.plan([a, b], {"t.py::a": verdict("t.py::a"), "t.py::b": verdict("t.py::b")}, root), root,
        priors={earlier.key: earlier, "pkg/other.py::helper": earlier})
    assert seen == {"Parser.parse": None, "helper": None, "Parser._advance": earlier}
    # Past the alternative the loop took, only a target with an earlier revision is run: it must not be lost.
    seen.clear()
    fake_loop(monkeypatch, {"Parser.parse": "accepted", "helper": "rejected", "Parser._advance": "rejected"}, seen)
    plan = session.plan([b], {"t.py::b": verdict("t.py::b")}, root)
    assert [t.qualname for t in plan[0].alternatives] == ["helper", "Parser.parse", "Parser._advance"]
    result = run(plan, root, priors={earlier.key: earlier})
    assert seen == {"helper": None, "Parser._advance": earlier}
    assert [o.qualname for o in result.optimizations] == ["helper", "Parser._advance"]


def test_soap_optimize_s_single_target_still_plans_as_before(root, monkeypatch):
    calls = fake_loop(monkeypatch, {"helper": "rejected"})
    planned = [session.Planned(Target(root, "pkg/parser.py", "helper"), ["time_s"], "no gate run")]
    assert [o.status for o in run(planned, root).optimizations] == ["rejected"] and calls == ["helper"]


@pytest.mark.parametrize("qualname, reason", [
    ("Parser", "pkg/parser.py::Parser is a class; name one of its methods, e.g. Parser.parse"),
    ("<lambda>", "cannot revise <lambda>: only a top-level function or a method of a top-level class"),
])
def test_what_the_loop_cannot_take_is_said_in_one_line(root, qualname, reason):
    assert session.unrevisable(Target(root, "pkg/parser.py", qualname)) == reason
    assert session.unrevisable(Target(root, "pkg/parser.py", "Parser.parse")) is None


def test_every_function_the_diff_changed_in_the_target_s_file_is_revisable_with_it(root):
    # The fix rewrote a changed function the profiles did not name (sqlparse: TokenList.group_tokens beside the
    # blamed TokenList.__init__): the reply that revises both must be accepted.
    a = attribution("t.py::test_parse", cause("Parser.parse", 0.9))
    changed = [("pkg/parser.py", "Parser._advance"), ("pkg/other.py", "elsewhere"), ("pkg/parser.py", "Parser.parse")]
    [p] = session.plan([a], {"t.py::test_parse": verdict("t.py::test_parse", 0.02)}, root, changed)
    assert p.target.related == (Related("pkg/parser.py", "Parser._advance", 0.0, True),)
    assert p.target.revisable == ("Parser._advance",)


def test_with_the_session_s_passing_tests_they_are_the_covering_tests_and_their_time_is_measured(root):
    a = attribution("t.py::a", cause("Parser.parse", 0.9))
    verdicts = {"t.py::a": verdict("t.py::a", 0.1)}
    [p] = session.plan([a], verdicts, root, passed={"t.py::a": 0.1, "u.py::b": 0.5, "v.py::c": 1.0})
    assert p.target.tests == ("t.py::a", "u.py::b", "v.py::c") and p.target.race == ("t.py::a",)
    assert p.target.measured_s == pytest.approx(1.6)  # the loop's first run takes them all, to find the callers
