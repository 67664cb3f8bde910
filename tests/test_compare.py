"""The statistics of the gate, on synthetic samples: no timing involved."""

import json

import pytest

from pytest_soap import compare
from pytest_soap.compare import Line, Thresholds, Verdict, judge, judge_metric, judge_paired, suspect_metrics, undecided
from pytest_soap.records import Measurement, Outcome, Sample
from pytest_soap.stats import sign_test_p

T = Thresholds()


def verdict(metric, values, base):
    return judge_metric(metric, values, Line(base, T.limit(metric), T.floor(metric, 0.1)), T.alpha)


def measurement(times, peaks=None, **kw):
    peaks = peaks or [None] * len(times)
    return Measurement("t.py::test", samples=[Sample(t, t, p, None) for t, p in zip(times, peaks)], **kw)


def test_sign_test_matches_the_binomial_tail():
    assert sign_test_p(5, 5) == pytest.approx(1 / 32)
    assert sign_test_p(7, 8) == pytest.approx(9 / 256)
    assert sign_test_p(0, 4) == 1.0
    assert sign_test_p(1, 1) == 0.5


def test_one_slow_run_is_a_suspect_not_a_regression():
    v = verdict("time_s", [0.200], 0.020)
    assert v.verdict == "unchanged"
    assert v.ratio == pytest.approx(10)
    assert "not significant" in v.reason


def test_five_runs_all_above_the_line_are_a_regression():
    v = verdict("time_s", [0.2, 0.21, 0.19, 0.2, 0.22], 0.02)
    assert v.verdict == "regressed"
    assert v.ratio == pytest.approx(10)
    assert v.p_value == pytest.approx(1 / 32)


def test_a_run_below_the_line_spoils_significance_with_few_runs():
    v = verdict("time_s", [0.2, 0.21, 0.019, 0.2, 0.22], 0.02)
    assert v.verdict == "unchanged"


def test_regression_needs_to_clear_the_threshold_not_just_be_slower():
    assert verdict("time_s", [0.0105] * 8, 0.010).verdict == "unchanged"  # 5% < 10%
    assert verdict("time_s", [0.0125] * 8, 0.010).verdict == "regressed"  # 25% > 10% and > 1 ms floor


def test_changes_under_the_absolute_floor_do_not_count():
    # 0.3 ms to 0.9 ms is 3x, but both are under the 1 ms floor: noise territory.
    assert verdict("time_s", [0.0009] * 8, 0.0003).verdict == "ungated"
    # Above the floor on one side but the change itself is under it.
    assert verdict("time_s", [0.0016] * 8, 0.0008).verdict == "unchanged"
    # A short test that becomes long is a regression.
    assert verdict("time_s", [0.05] * 8, 0.0003).verdict == "regressed"
    # Memory: 0.5 MiB more is under the 1 MiB floor whatever the ratio.
    assert verdict("peak_mb", [1.5] * 8, 1.0).verdict == "unchanged"
    assert verdict("peak_mb", [30.0] * 8, 10.0).verdict == "regressed"


def test_an_improvement_takes_the_evidence_a_regression_does():
    # One fast run is a suspect, as one slow run is: not an improvement.
    v = verdict("time_s", [0.01], 0.05)
    assert v.verdict == "unchanged" and v.ratio == pytest.approx(0.2)
    assert v.reason == "1 of 1 runs below the threshold: not significant"
    # Five runs of five below the line: improved, on the p a regression needs.
    v = verdict("time_s", [0.01, 0.011, 0.009, 0.01, 0.012], 0.05)
    assert v.verdict == "improved" and v.p_value == pytest.approx(1 / 32)
    # One run back at the base's figure spoils it, as one run under the line spoils a regression.
    assert verdict("time_s", [0.01, 0.011, 0.05, 0.01, 0.012], 0.05).verdict == "unchanged"
    # Memory too; and an improvement under the floor is no more one than a regression is.
    assert verdict("peak_mb", [10.0] * 5, 30.0).verdict == "improved"
    assert verdict("peak_mb", [1.0] * 5, 1.5).verdict == "unchanged"


def test_an_improvement_suspect_runs_again_until_it_is_settled():
    base = {"time_s": 0.05, "peak_mb": None, "tmu_mbs": None}
    assert suspect_metrics(measurement([0.01]), base, T, improvements=True) == ["time_s"]
    assert undecided(measurement([0.01]), base, T, max_runs=5)
    assert not undecided(measurement([0.01] * 5), base, T, max_runs=5)  # five of five below: improved
    assert not undecided(measurement([0.01, 0.05]), base, T, max_runs=5)  # 5 of 5 is out of reach: unchanged
    assert not undecided(measurement([0.048]), base, T, max_runs=5)  # inside the line: no suspect


def test_memray_heap_overrules_a_resident_improvement_as_it_does_a_regression():
    base = {"time_s": 0.02, "peak_mb": 30.0, "tmu_mbs": None, "heap": {"peak_mb": 10.0, "mean_mb": 8.0}}
    m = measurement([0.02] * 5, [10.0] * 5)
    m.heap = {"peak_mb": 10.1, "mean_mb": 8.0}  # the heap did not shrink: the process's memory did
    v = judge(m, base, T).metrics["peak_mb"]
    assert v.verdict == "unchanged" and "memray's heap did not" in v.reason
    m.heap = {"peak_mb": 3.0, "mean_mb": 2.0}
    assert judge(m, base, T).improved_metrics == ["peak_mb"]


LUCKY = """
    import os, pathlib, time

    def test_lucky():
        # In the judged session, fast on its first run only.
        ran = pathlib.Path(__file__).with_name("ran")
        lucky = os.environ.get("JUDGED") and not ran.exists()
        if os.environ.get("JUDGED"):
            ran.touch()
        time.sleep(0.005 if lucky else 0.1)

    def test_faster():
        time.sleep(0.005 if os.environ.get("JUDGED") else 0.1)
"""


def test_against_a_saved_baseline_one_fast_run_is_run_again_before_it_is_called_improved(pytester, monkeypatch):
    import json
    import textwrap

    pytester.makepyfile(test_speed=textwrap.dedent(LUCKY))
    assert pytester.runpytest("--soap", "--soap-save").ret == 0
    monkeypatch.setenv("JUDGED", "1")
    result = pytester.runpytest("--soap", "--soap-json", "report.json")
    assert result.ret == 0, result.stdout.str()
    tests = {t["nodeid"].split("::")[-1]: t for t in json.loads((pytester.path / "report.json").read_text())["tests"]}
    # Its first run read 20 times faster; run again, it was not. A regression's single slow run goes the same way.
    lucky = tests["test_lucky"]
    assert lucky["verdict"] == "unchanged" and lucky["runs"] >= 2
    assert lucky["metrics"]["time_s"]["reason"].endswith("runs below the threshold: not significant")
    # Faster on every run: five runs of five below the line.
    faster = tests["test_faster"]
    assert faster["verdict"] == "improved" and faster["runs"] == 5
    assert faster["metrics"]["time_s"]["p_value"] == pytest.approx(1 / 32)


def test_test_verdict_lists_regressed_metrics_and_respects_markers():
    m = measurement([0.2] * 5, [30.0] * 5)
    base = {"time_s": 0.02, "cpu_s": 0.02, "peak_mb": 10.0, "tmu_mbs": None}
    v = judge(m, base, T)
    assert v.verdict == "regressed"
    assert v.regressed_metrics == ["time_s", "peak_mb"]
    assert judge(measurement([0.2] * 5, threshold=2000), base | {"peak_mb": None}, T).verdict == "unchanged"
    assert judge(measurement([0.2] * 5, skip=True), base, T).verdict == "excluded"
    assert judge(measurement([0.2] * 5, outcome="failed"), base, T).verdict == "failed"
    assert judge(measurement([0.2] * 5), None, T).verdict == "new"


def test_suspects_and_the_stopping_rule():
    base = {"time_s": 0.02, "peak_mb": None, "tmu_mbs": None}
    slow = measurement([0.2])
    assert suspect_metrics(slow, base, T) == ["time_s"]
    assert undecided(slow, base, T, max_runs=8)
    # Five of five above: significant, stop.
    assert not undecided(measurement([0.2] * 5), base, T, max_runs=8)
    # Two runs below the line out of 8 possible: 7 of 8 can no longer be reached, stop.
    assert not undecided(measurement([0.2, 0.02, 0.02]), base, T, max_runs=8)
    # The round budget ends it too.
    assert not undecided(measurement([0.2, 0.02] * 4), base, T, max_runs=8)
    assert suspect_metrics(measurement([0.02]), base, T) == []


def test_tmu_floor_is_the_memory_floor_held_for_the_whole_call():
    # 0.6 MiB more, held for a 0.2 s call: 0.12 MiB·s, under 1 MiB x 0.2 s. Not a memory regression.
    m = Measurement("t.py::test", samples=[Sample(0.2, 0.2, 0.7, 0.14)] * 5)
    base = {"time_s": 0.2, "peak_mb": 0.1, "tmu_mbs": 0.02}
    assert judge(m, base, T).metrics["tmu_mbs"].verdict == "ungated"
    assert suspect_metrics(m, base, T) == []
    # 30 MiB more for the same call is.
    m = Measurement("t.py::test", samples=[Sample(0.2, 0.2, 30.1, 6.0)] * 5)
    assert judge(m, base, T).regressed_metrics == ["peak_mb", "tmu_mbs"]


def test_spread_between_saved_runs_widens_the_line():
    # Three saves put this test between 18 and 22 ms: 20% of run-to-run noise one save would not show.
    saves = [{"time_s": 0.018}, {"time_s": 0.020}, {"time_s": 0.022}]
    base = {"time_s": 0.020, "saves": saves}
    assert judge(measurement([0.0235] * 5), base, T).verdict == "unchanged"  # 1.18x: inside 10% + 20%
    assert judge(measurement([0.0235] * 5), {"time_s": 0.020}, T).verdict == "regressed"  # one save: no allowance
    assert judge(measurement([0.03] * 5), base, T).verdict == "regressed"  # 1.5x clears both


def test_memray_heap_overrules_resident_growth_when_both_sides_have_it():
    base = {"time_s": 0.02, "peak_mb": 10.0, "tmu_mbs": None, "heap": {"peak_mb": 10.0, "mean_mb": 8.0}}
    m = measurement([0.02] * 5, [30.0] * 5)
    m.heap = {"peak_mb": 10.2, "mean_mb": 8.1}  # the heap did not grow: the process's memory did
    v = judge(m, base, T)
    assert v.metrics["peak_mb"].verdict == "unchanged"
    assert "memray's heap did not" in v.metrics["peak_mb"].reason
    m.heap = {"peak_mb": 30.0, "mean_mb": 24.0}
    assert judge(m, base, T).regressed_metrics == ["peak_mb"]
    m.heap = None  # no heap run (memray unavailable): resident memory decides
    assert judge(m, base, T).regressed_metrics == ["peak_mb"]


def test_tmu_is_confirmed_by_the_heap_mean_not_the_heap_tmu():
    # Resident TMU 8x up; the heap's TMU rose too, only because the tracked run took longer; its mean did not.
    base = {"time_s": 0.2, "peak_mb": 20.0, "tmu_mbs": 1.0,
            "heap": {"peak_mb": 20.0, "tmu_mbs": 2.0, "mean_mb": 10.0}}
    m = Measurement("t.py::test", samples=[Sample(0.2, 0.2, 20.0, 8.0)] * 5)
    m.heap = {"peak_mb": 20.0, "tmu_mbs": 3.0, "mean_mb": 10.2}
    v = judge(m, base, T)
    assert v.metrics["tmu_mbs"].verdict == "unchanged"
    m.heap = {"peak_mb": 20.0, "tmu_mbs": 8.0, "mean_mb": 40.0}  # memory really held longer
    assert judge(m, base, T).regressed_metrics == ["tmu_mbs"]


def test_verdicts_and_outcomes_are_enums_that_read_and_write_as_their_old_strings():
    failed = judge(measurement([0.2] * 5, outcome="failed"), {"time_s": 0.2}, T)
    assert failed.verdict is Outcome.FAILED and failed.measurement.outcome is Outcome.FAILED  # read into members
    assert failed.verdict == "failed" and {"failed": 1}[failed.verdict] == 1  # equal, and hashed, as the text
    regressed = judge(measurement([0.3] * 5), {"time_s": 0.2}, T)
    assert regressed.verdict is Verdict.REGRESSED and regressed.metrics["time_s"].verdict is Verdict.REGRESSED
    # Written as before: str, f-strings, format with a spec, json, upper().
    assert (str(Verdict.REGRESSED), f"{Verdict.REGRESSED}", f"{Verdict.NEW:>5}|", format(Outcome.FLAKY, "<6") + "|") == (
        "regressed", "regressed", "  new|", "flaky |")
    assert Outcome.FAILED.upper() == "FAILED" and json.dumps({Verdict.NEW: [Outcome.XPASSED]}) == '{"new": ["xpassed"]}'
    # Plain data out (xdist's execnet sends no str subclass), members back in.
    data = measurement([0.2], outcome="flaky").to_dict()
    assert type(data["outcome"]) is str and Measurement.from_dict(data).outcome is Outcome.FLAKY
    assert Measurement("t.py::test", outcome="deselected").outcome == "deselected"  # unknown: kept as it was
    assert compare.TestVerdict(measurement([]), None, "removed").verdict is Verdict.REMOVED  # as plugin.py passes it


def test_a_test_that_failed_on_the_ref_is_one_verdict_with_the_ref_outcome_kept():
    head, base = measurement([0.2] * 3), measurement([0.2] * 3, outcome="error")
    v = judge_paired(head, base, T)
    assert (v.verdict, v.ref_outcome, v.label) == (Verdict.ON_REF, Outcome.ERROR, "error on ref")
    assert judge(measurement([0.2], outcome="skipped"), None, T).label == "skipped"


def test_a_test_takes_its_worst_metrics_verdict_by_rank_not_by_name():
    assert [v.rank for v in (Verdict.REGRESSED, Verdict.UNCONFIRMED, Verdict.IMPROVED, Verdict.UNCHANGED, Verdict.NEW,
                             Verdict.UNGATED)] == [0, 1, 2, 3, 4, 5]
    m = measurement([0.05] * 5, [100.0] * 5)
    v = judge(m, {"time_s": 0.1, "peak_mb": 50.0}, T)  # faster, and twice the memory
    assert (v.metrics["time_s"].verdict, v.metrics["peak_mb"].verdict, v.verdict) == (
        Verdict.IMPROVED, Verdict.REGRESSED, Verdict.REGRESSED)
    assert judge(measurement([0.2] * 5), {"time_s": None}, T).verdict is Verdict.NEW
