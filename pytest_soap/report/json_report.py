"""The machine-readable report (`--soap-json`), in the schema of the design."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..attribute import Attribution
from ..compare import TestVerdict, Verdict
from ..records import METRICS, Measurement
from ..store import Baseline, atomic_write

SCHEMA = 1


def test_entry(t: TestVerdict, base: Measurement | None = None) -> dict:
    """A test's entry, plain data: its outcome and verdicts as the strings they are written as, and its raw
    times (the ref's too, with --soap-against), for whoever wants to judge them another way."""
    m = t.measurement
    entry = {"nodeid": m.nodeid, "outcome": str(m.outcome), **m.figures(),
             "baseline": {k: t.baseline.get(k) for k in METRICS} if t.baseline else None,
             "verdict": t.label, "regressed_metrics": t.regressed_metrics,
             # Each metric's own base and current figures: the ones its ratio is of (the rounds' medians).
             "metrics": {k: {"verdict": str(v.verdict), "baseline": v.baseline, "current": v.current,
                             "ratio": v.ratio, "p_value": v.p_value, "test": v.test or None, "runs": v.runs,
                             "interval": list(v.interval) if v.interval else None, "reason": v.reason or None}
                         for k, v in t.metrics.items()},
             "wait_s": m.figure("wait_s"), "runs": len(m.samples), "timer": m.timer,
             "heap": m.heap, "baseline_heap": (t.baseline or {}).get("heap"),
             **_samples(m, "")}
    if base is not None:
        entry |= _samples(base, "baseline_")
    return entry


def _samples(m: Measurement, prefix: str) -> dict:
    """Every run's time in order (the first pass first), and how many of them each process gave."""
    return {f"{prefix}samples_s": [s.time_s for s in m.samples],
            f"{prefix}processes": [len(m.samples) - sum(m.rounds), *m.rounds]}


def functions(attributions: list[Attribution]) -> list[dict]:
    """One entry per blamed function, with each test's evidence. For every test, the function most to blame
    comes first among the entries naming it: each test's first cause is placed before its other causes,
    the entries that are the first cause of more tests going first when that is not enough."""
    entries: dict[tuple[str, str], dict] = {}
    firsts: dict[tuple[str, str], int] = {}
    for a in attributions:
        for rank, c in enumerate(a.causes):
            key = (c.file, c.qualname)
            entry = entries.setdefault(key, {"file": c.file, "qualname": c.qualname, "lineno": c.lineno, "tests": [],
                                              "changed": c.changed, "evidence": {}})
            entry["tests"].append(a.nodeid)
            entry["evidence"][a.nodeid] = {"rank": rank + 1, "delta_own_s": c.delta_own_s, "delta_cum_s": c.delta_cum_s,
                                           "delta_peak_mb": c.delta_peak_mb, "share": c.share, "reason": c.reason,
                                           "within": c.within or None, "basis": a.evidence}
            firsts[key] = firsts.get(key, 0) + (rank == 0)
    return sorted(entries.values(), key=lambda e: (min(v["rank"] for v in e["evidence"].values()),
                                                   -firsts[(e["file"], e["qualname"])],
                                                   -max(v["share"] for v in e["evidence"].values())))


def build(verdicts: list[TestVerdict], baseline: Baseline | None, settings, paired=None, attributions=None,
          loop=None, mismatch: str | None = None) -> dict:
    return {
        "schema": SCHEMA,
        "baseline": ({"path": str(settings.baseline), "created": baseline.created, "commit": baseline.commit,
                      "machine": baseline.machine, "python": baseline.python} if baseline else None),
        "against": ({"ref": paired.ref.name, "commit": paired.ref.sha, "head": paired.ref.head_sha,
                     "dirty": paired.ref.dirty, "sides": paired.sides, "rounds": paired.rounds,
                     "suspects": paired.suspects,
                     "seconds": paired.seconds, "problem": paired.problem}
                    if paired else None),
        "mismatch": mismatch,  # why the run's tests and the baseline's (or the ref's) could not be compared
        "memory": "rss" if settings.memory else "off",
        "thresholds": asdict(settings.thresholds),
        "tests": [test_entry(t, paired.base.get(t.nodeid) if paired else None) for t in verdicts],
        "regressions": [t.nodeid for t in verdicts if t.verdict == Verdict.REGRESSED],
        "unconfirmed": [t.nodeid for t in verdicts if t.verdict == Verdict.UNCONFIRMED],
        "functions": functions(attributions or []),
        "optimizations": [o.to_dict() for o in loop.optimizations] if loop else [],
        "patch": str(loop.patch) if loop and loop.patch else None,
    }


def write(path: Path, verdicts: list[TestVerdict], baseline: Baseline | None, settings, paired=None,
          attributions=None, loop=None, mismatch: str | None = None) -> None:
    atomic_write(path, json.dumps(build(verdicts, baseline, settings, paired, attributions, loop, mismatch),
                                  indent=1) + "\n")
