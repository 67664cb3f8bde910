"""`soap merge`: the JSON reports of a sharded run (a job matrix, each shard ran part of the suite) as one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .compare import Verdict
from .records import Outcome
from .report.json_report import SCHEMA
from .store import atomic_write

# A shard that did not run a test yields it to one that did. ("deselected": no outcome this version writes.)
NOT_RUN = {Outcome.SKIPPED, "deselected", Outcome.REMOVED}
SAME_AGAINST = ("commit", "head")  # shards compared different code if these differ
SAME_BASELINE = ("commit", "created")


class MergeError(Exception):
    """Reports that cannot be merged; the message is one line for the user."""


def load_report(path: Path) -> dict:
    """One JSON report (--soap-json), checked; a MergeError naming the file when it is not one."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeError(f"{path}: no such file") from None
    except OSError as e:
        raise MergeError(f"{path}: cannot be read ({e.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MergeError(f"{path} is corrupt, not a JSON report ({_one_line(e)})") from None
    _check(str(path), report)
    return report


def merge_files(paths: list[Path]) -> dict:
    return _merge([(str(path), load_report(path)) for path in paths])


def merge_into(output: Path, paths: list[Path]) -> dict:
    """Merge the reports at `paths` and write the result to `output`, which must be none of them: the
    shard would be lost (the old `soap merge OUT SHARD...` took a forgotten output's first shard for it)."""
    for path in paths:
        if _same_file(output, path):
            raise MergeError(f"{output} is both the output and one of the reports to merge: it would be overwritten")
    report = merge_files(paths)
    write(output, report)
    return report


def write(path: Path, report: dict) -> None:
    atomic_write(path, json.dumps(report, indent=1) + "\n")


def _same_file(a: Path, b: Path) -> bool:
    """The same file by any name (relative, through a symlink, a hard link); a path not there yet is no input."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def merge(reports: list[dict]) -> dict:
    return _merge([(f"report {i}", r) for i, r in enumerate(reports, 1)])


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _check(name: str, report) -> None:
    if not isinstance(report, dict) or not isinstance(report.get("tests"), list):
        raise MergeError(f"{name} is not a pytest-soap JSON report (no list of tests)")
    if not all(isinstance(t, dict) and isinstance(t.get("nodeid"), str) for t in report["tests"]):
        raise MergeError(f"{name} is not a pytest-soap JSON report (a test without a nodeid)")
    schema = report.get("schema")
    if schema != SCHEMA:
        newer = isinstance(schema, int) and schema > SCHEMA
        raise MergeError(f"{name} has schema {schema}, " + (f"newer than this pytest-soap reads ({SCHEMA})" if newer
                                                           else f"where this pytest-soap reads {SCHEMA}"))


def _same(key: str, fields: tuple[str, ...], reports: list[tuple[str, dict]]) -> None:
    """Every shard compared with the same thing: a merged verdict means nothing otherwise."""
    first_name, first = reports[0]
    for name, report in reports[1:]:
        a, b = first.get(key), report.get(key)
        if (a is None) != (b is None):
            with_it, without = (first_name, name) if a else (name, first_name)
            raise MergeError(f"{with_it} has {key} and {without} has none: the shards were not compared alike")
        if not a or b is None:  # b is None only when a is (checked above)
            continue
        for field in fields:
            if a.get(field) != b.get(field):
                raise MergeError(f"{first_name} and {name} differ in {key}.{field} "
                                 f"({a.get(field)} and {b.get(field)}): the shards were not compared alike")


def _same_thresholds(reports: list[tuple[str, dict]]) -> None:
    first_name, first = reports[0]
    for name, report in reports[1:]:
        a, b = first.get("thresholds") or {}, report.get("thresholds") or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                raise MergeError(f"{first_name} and {name} differ in thresholds.{key} "
                                 f"({a.get(key)} and {b.get(key)}): the shards were not judged alike")


def _tests(reports: list[tuple[str, dict]]) -> list[dict]:
    kept: dict[str, tuple[str, dict]] = {}  # nodeid → (the report it came from, its entry); insertion keeps order
    for name, report in reports:
        for test in report["tests"]:
            nodeid = test["nodeid"]
            if nodeid not in kept:
                kept[nodeid] = (name, test)
                continue
            other_name, other = kept[nodeid]
            if test.get("outcome") in NOT_RUN:
                continue
            if other.get("outcome") not in NOT_RUN:
                raise MergeError(f"{nodeid} ran in both {other_name} and {name}: shards must split the suite")
            kept[nodeid] = (name, test)
    return [test for _, test in kept.values()]


def _functions(reports: list[tuple[str, dict]]) -> list[dict]:
    merged: dict[tuple[str, str], dict] = {}
    for _, report in reports:
        for f in report.get("functions") or []:
            key = (f.get("file"), f.get("qualname"))
            if key not in merged:
                merged[key] = {**f, "tests": list(f.get("tests") or []), "evidence": dict(f.get("evidence") or {})}
                continue
            entry = merged[key]
            entry["tests"] += [t for t in f.get("tests") or [] if t not in entry["tests"]]
            entry["evidence"].update(f.get("evidence") or {})
            entry["changed"] = bool(entry.get("changed") or f.get("changed"))

    # The order json_report gives: for each test, the function most to blame comes first among those naming it.
    def order(entry: dict) -> tuple:
        evidence = list(entry["evidence"].values()) or [{}]
        return (min(e.get("rank", 1) for e in evidence), -sum(e.get("rank") == 1 for e in evidence),
                -max(e.get("share") or 0 for e in evidence))
    return sorted(merged.values(), key=order)


def _against(reports: list[tuple[str, dict]]) -> dict | None:
    sides = [r["against"] for _, r in reports if r.get("against")]
    if not sides:
        return None
    merged = dict(sides[0])
    merged["suspects"] = sum(s.get("suspects") or 0 for s in sides)
    merged["rounds"] = max(s.get("rounds") or 0 for s in sides)
    merged["dirty"] = any(s.get("dirty") for s in sides)
    merged["problem"] = next((s["problem"] for s in sides if s.get("problem")), None)
    # Shards run side by side, so a stage took as long as its slowest shard.
    stages = [s.get("seconds") or {} for s in sides]
    merged["seconds"] = {k: max(s.get(k) or 0 for s in stages) for k in dict.fromkeys(k for s in stages for k in s)}
    return merged


def _merge(reports: list[tuple[str, dict]]) -> dict:
    if not reports:
        raise MergeError("no reports to merge")
    for name, report in reports:
        _check(name, report)
    _same("against", SAME_AGAINST, reports)
    _same("baseline", SAME_BASELINE, reports)
    _same_thresholds(reports)

    first = reports[0][1]
    tests = _tests(reports)
    patches = [r["patch"] for _, r in reports if r.get("patch")]
    patches += [p for _, r in reports for p in r.get("patches") or [] if p not in patches]
    memory = {r.get("memory") for _, r in reports}
    merged = {**first,
              "against": _against(reports),
              "memory": memory.pop() if len(memory) == 1 else "mixed",
              "mismatch": next((r["mismatch"] for _, r in reports if r.get("mismatch")), None),
              "tests": tests,
              "regressions": [t["nodeid"] for t in tests if t.get("verdict") == Verdict.REGRESSED],
              "functions": _functions(reports),
              "optimizations": [o for _, r in reports for o in r.get("optimizations") or []],
              "patch": patches[0] if patches else None,
              "shards": sum(r.get("shards") or 1 for _, r in reports)}  # a merged report counts its own shards
    merged.pop("patches", None)
    if len(patches) > 1:
        merged["patches"] = patches  # every shard's patch, the first included
    return merged
