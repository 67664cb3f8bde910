"""The Markdown report (`soap report`, the action's job summary and sticky comment), from the JSON report."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from ..compare import Verdict
from . import units
from .terminal import counts

MARKER = "<!-- pytest-soap -->"  # the hidden marker of the action's sticky comment; the render starts with it

MAX_REGRESSION_ROWS = 50  # a comment must stay readable (and under GitHub's 65536 characters)
MAX_IMPROVEMENT_ROWS = 10
MAX_FUNCTIONS = 15
MAX_TESTS_PER_FUNCTION = 5
MAX_CHART_TESTS = 12
FEW_REGRESSIONS = 6  # below this, the chart shows improvements too


def render(report: dict, *, title: str = "pytest-soap", pr_url: str | None = None, notes: Sequence[str] = ()) -> str:
    tests = report.get("tests") or []
    parts = [MARKER, f"### {title}", _verdict(report, tests)]
    parts += _regressions(tests)
    parts += _unconfirmed(tests)
    parts += _improvements(tests)
    parts += _functions(report.get("functions") or [])
    parts += _optimizations(report, pr_url)
    parts += _chart(report, tests)
    if notes:
        parts.append("\n".join(f"- {_one_line(n)}" for n in notes))
    parts.append(_footer(report))
    return "\n\n".join(parts) + "\n"


# Escaping: prose from the report (reasons, refs) must not turn into HTML tags or emphasis, and a `|` would
# split a table cell (GFM reads `\|` as a pipe even inside a code span).

def _one_line(text) -> str:
    return " ".join(str(text).split())


def _prose(text) -> str:
    return re.sub(r"([\\`*_\[\]<>])", r"\\\1", _one_line(text))


def _code(text) -> str:
    text = _one_line(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"  # a backtick inside needs the double fence


def _row(*cells: str) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join([_row(*header), _row(*["---"] * len(header)), *(_row(*r) for r in rows)])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


# 1. The verdict

def _compared_with(report: dict) -> str | None:
    against, baseline = report.get("against"), report.get("baseline")
    if against:
        commit = against.get("commit") or ""
        text = f"against {_code(against.get('ref') or '?')} ({_code(commit[:10])})"
        if commit and against.get("head") == commit:
            text += ", the same commit as HEAD" + (" with uncommitted changes" if against.get("dirty") else
                                                   ": a null comparison")
        elif against.get("dirty"):
            text += ", the working tree with uncommitted changes"
        return text
    if baseline:
        facts = [_code((baseline.get("commit") or "")[:10]) if baseline.get("commit") else "no commit"]
        if baseline.get("created"):
            facts.append(str(baseline["created"])[:10])
        return f"against the saved baseline {_code(baseline.get('path') or '?')} ({', '.join(facts)})"
    return None


def _counts(report: dict, tests: list[dict]) -> str:
    parts = counts(t.get("verdict") for t in tests)
    text = f"{_plural(len(tests), 'test')}" + (f": {', '.join(parts)}" if parts else "")
    if report.get("shards"):
        text += f"; merged from {_plural(report['shards'], 'shard')}"
    return text


def _verdict(report: dict, tests: list[dict]) -> str:
    regressed = [t for t in tests if t.get("verdict") == Verdict.REGRESSED]
    unconfirmed = [t for t in tests if t.get("verdict") == Verdict.UNCONFIRMED]
    compared = _compared_with(report)
    problem = (report.get("against") or {}).get("problem")
    if regressed:
        head = f":x: **{_plural(len(regressed), 'test')} regressed** {compared or ''}".rstrip()
    elif report.get("mismatch"):  # the gate failed: nothing could be compared
        head = f":x: **not compared**: {_prose(report['mismatch'].removeprefix('pytest-soap: '))}"
    elif problem:
        head = f":warning: **not compared**: {_prose(problem)}"
    elif compared is None:
        head = ":grey_question: **not compared**: no saved baseline and no git ref to compare with"
    elif unconfirmed:
        head = f":warning: **{_plural(len(unconfirmed), 'test')} unconfirmed**, none regressed {compared}"
    else:
        head = f":white_check_mark: **no performance regression** {compared}"
    return f"{head} · {_counts(report, tests)}"


# 2, 3. The tables of regressed and improved metrics

def _short(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def _figures(test: dict, metric: str) -> tuple[float | None, float | None]:
    """Base and head of one metric: the verdict's own when the report carries them, else the test's medians."""
    verdict = (test.get("metrics") or {}).get(metric) or {}
    base = verdict.get("baseline", (test.get("baseline") or {}).get(metric))
    head = verdict.get("current", test.get(metric))
    return base, head


def _change(test: dict, metric: str) -> str:
    base, head = _figures(test, metric)
    text = f"{units.figure(metric, base)} → {units.figure(metric, head)}"
    heap = (test.get("heap") or {}).get(metric)
    if metric in ("peak_mb", "tmu_mbs") and heap is not None:
        base_heap = (test.get("baseline_heap") or {}).get(metric)
        before = f"{units.figure(metric, base_heap)} → " if base_heap is not None else ""
        text += f"<br>heap by memray: {before}{units.figure(metric, heap)}"
    return text


def _metric_rows(tests: list[dict], verdict: Verdict) -> list[tuple[dict, str, dict]]:
    return [(t, m, (t.get("metrics") or {}).get(m) or {}) for t in tests if t.get("verdict") == verdict
            for m, v in (t.get("metrics") or {}).items() if v.get("verdict") == verdict]


def _more(shown: int, total: int, what: str) -> list[str]:
    return [f"…and {total - shown} more {what}: see the JSON report."] if total > shown else []


def _regressions(tests: list[dict]) -> list[str]:
    rows = _metric_rows(tests, Verdict.REGRESSED)
    if not rows:
        return []
    with_interval = any(v.get("interval") for _, _, v in rows)
    header = ["Test", "Metric", "Base → head", "Ratio"] + (["95% interval"] if with_interval else []) + ["p-value"]
    lines = []
    for test, metric, v in rows[:MAX_REGRESSION_ROWS]:
        interval = v.get("interval")
        p = f"{v['p_value']:.3g} ({v.get('runs', '?')} runs)" if v.get("p_value") is not None else "-"
        lines.append([_code(test["nodeid"]), units.LABEL.get(metric, metric), _change(test, metric),
                      f"**{units.ratio(v.get('ratio'))}**"]
                     + ([f"[{interval[0]:.2f}–{interval[1]:.2f}]" if interval else ""] if with_interval else [])
                     + [p])
    return ["#### Regressions", table(header, lines), *_more(len(lines), len(rows), "regressed metrics")]


def _unconfirmed(tests: list[dict]) -> list[str]:
    rows = _metric_rows(tests, Verdict.UNCONFIRMED)
    if not rows:
        return []
    lines = [[_code(t["nodeid"]), units.LABEL.get(m, m), _change(t, m), units.ratio(v.get("ratio")), _prose(v.get("reason") or "")]
             for t, m, v in rows[:MAX_REGRESSION_ROWS]]
    return ["#### Unconfirmed: past the line, but the rounds ran out before the evidence sufficed",
            table(["Test", "Metric", "Base → head", "Ratio", "Why"], lines),
            *_more(len(lines), len(rows), "unconfirmed metrics")]


def _improvements(tests: list[dict]) -> list[str]:
    rows = _metric_rows(tests, Verdict.IMPROVED)
    if not rows:
        return []
    lines = [[_code(t["nodeid"]), units.LABEL.get(m, m), _change(t, m), units.ratio(v.get("ratio"))]
             for t, m, v in rows[:MAX_IMPROVEMENT_ROWS]]
    return ["#### Improvements", table(["Test", "Metric", "Base → head", "Ratio"], lines),
            *_more(len(lines), len(rows), "improved metrics")]


# 4. The functions blamed

def _share(evidence: dict) -> str:
    """As the terminal shows it. A share of 0 is an unchanged helper's, whose rise is in its changed caller's share
    (shares never count the same time twice)."""
    share = evidence.get("share")
    if share is None:
        return ""
    if share > 0:
        return f"{share:.0%}"
    return f"(in {_code(evidence['within'])}'s share)" if evidence.get("within") else "(in its caller's share)"


def _functions(functions: list[dict]) -> list[str]:
    if not functions:
        return []
    rows = []
    for f in functions[:MAX_FUNCTIONS]:
        evidence = f.get("evidence") or {}
        named = [f"{_code(_short(n))} {_share(evidence.get(n, {}))}".rstrip() for n in f.get("tests") or []]
        if len(named) > MAX_TESTS_PER_FUNCTION:
            named = named[:MAX_TESTS_PER_FUNCTION] + [f"+{len(named) - MAX_TESTS_PER_FUNCTION} more"]
        where = f"{f.get('file')}:{f['lineno']}" if f.get("lineno") else str(f.get("file"))
        rows.append([_code(where), _code(f.get("qualname")), "changed" if f.get("changed") else "unchanged",
                     ", ".join(named)])
    bases = list(dict.fromkeys(e.get("basis") for f in functions for e in (f.get("evidence") or {}).values()
                               if e.get("basis")))
    return ["#### Blamed functions",
            table(["Where", "Function", "Changed", "Tests (share of the regression)"], rows),
            *_more(len(rows), len(functions), "functions"),
            *([f"From {'; '.join(_prose(b) for b in bases)}."] if bases else [])]


# 5. The SOAP loop's outcome

def before_after_rows(o: dict) -> list[list[str]]:
    """An optimisation's figures, a row per metric: metric, before, after, ratio (also the action's PR body)."""
    before, after = o.get("before") or {}, o.get("after") or {}
    rows = []
    for m in (m for m in before if m in units.FORMAT):
        ratio = after[m] / before[m] if after.get(m) is not None and before[m] else None
        rows.append([units.LABEL[m], units.figure(m, before[m]), units.figure(m, after.get(m)) if after else "-",
                     units.ratio(ratio)])
    return rows


def _optimization(o: dict) -> list[str]:
    head = f"**{_code(o.get('qualname'))}** in {_code(o.get('file'))}: **{_prose(o.get('status', '?'))}**"
    if o.get("reason"):
        head += f": {_prose(o['reason'])}"
    parts = [head]
    rows = before_after_rows(o)
    if rows:
        parts.append(table(["Metric", "Before", "After", "Ratio"], rows))
        parts.append("Figures of one run of the regressed tests, the median of the race's samples.")
    if o.get("reused"):
        how = "re-verified on this tree as round 0" if o.get("candidates") else "built for this head and base, not run again"
        parts.append(f"Reused: the revision of {_prose(o['reused'].get('from', 'an earlier run'))}, {how}.")
    for label, key in (("Behaviour", "behaviour"), ("Final check", "final_check"), ("Sandbox", "sandbox")):
        if o.get(key):
            parts.append(f"{label}: {_prose(o[key])}.")
    candidates = o.get("candidates") or []
    if candidates:
        rounds = "\n".join(f"- round {c.get('iteration')}: {_prose(c.get('status'))}"
                           + (f": {_prose(c['reason'])}" if c.get("reason") else "") for c in candidates)
        parts.append(f"<details><summary>{_plural(len(candidates), 'round')} tried</summary>\n\n{rounds}\n\n</details>")
    tokens = o.get("tokens") or {}
    if tokens.get("input") or tokens.get("output"):
        cost = f", about ${o['cost_usd']:.2f}" if o.get("cost_usd") is not None else ""
        parts.append(f"Tokens: {tokens.get('input', 0)} in ({tokens.get('cache_read', 0)} from the cache), "
                     f"{tokens.get('output', 0)} out{cost}.")
    return parts


def _optimizations(report: dict, pr_url: str | None) -> list[str]:
    optimizations = report.get("optimizations") or []
    patches = report.get("patches") or ([report["patch"]] if report.get("patch") else [])
    if not optimizations and not pr_url and not patches:
        return []
    parts = ["#### Optimisations"]
    for o in optimizations:
        parts += _optimization(o)
    if pr_url:
        parts.append(f"A pull request with the optimised code: {pr_url}")
    elif patches:
        parts.append(f"The accepted revisions are in {', '.join(_code(p) for p in patches)} on the machine that ran "
                     "the tests (`git apply` it, or rerun with `--soap-apply`).")
    return parts


# 6. The chart: each charted test's worst ratio against the threshold line

def _label(nodeid: str) -> str:
    # Mermaid reads quotes, brackets and commas as syntax inside the axis list: keep plain characters only.
    text = re.sub(r"[^A-Za-z0-9_.:/=+ -]+", " ", _short(nodeid))
    return " ".join(text.split())[:30] or "test"


def _worst_ratio(test: dict, verdict: Verdict) -> float | None:
    ratios = [v["ratio"] for v in (test.get("metrics") or {}).values()
              if v.get("verdict") == verdict and v.get("ratio") is not None]
    if not ratios:
        return None
    return max(ratios) if verdict == Verdict.REGRESSED else min(ratios)


def _chart(report: dict, tests: list[dict]) -> list[str]:
    def charted(verdict: Verdict) -> list[tuple[dict, float]]:
        """The tests with this verdict, the furthest from 1 first."""
        pairs = [(t, _worst_ratio(t, verdict)) for t in tests if t.get("verdict") == verdict]
        return sorted([(t, r) for t, r in pairs if r is not None], key=lambda p: p[1],
                      reverse=verdict == Verdict.REGRESSED)

    bars = charted(Verdict.REGRESSED)[:MAX_CHART_TESTS]
    if len(bars) < FEW_REGRESSIONS:
        bars += charted(Verdict.IMPROVED)[:MAX_CHART_TESTS - len(bars)]
    if not bars:
        return []
    limit = 1 + ((report.get("thresholds") or {}).get("time_pct") or 10.0) / 100
    labels: list[str] = []
    seen: Counter[str] = Counter()
    for t, _ in bars:
        label = _label(t["nodeid"])
        seen[label] += 1
        labels.append(label if seen[label] == 1 else f"{label} {seen[label]}")  # equal labels would merge bars
    top = math.ceil(max(limit, *(r for _, r in bars)) * 1.1 * 10) / 10
    axis = ", ".join(f'"{label}"' for label in labels)
    return ["```mermaid\nxychart-beta\n"
            f'    title "Head over base per test, worst metric (line: {limit:.2f}, the time threshold)"\n'
            f"    x-axis [{axis}]\n"
            f'    y-axis "head / base" 0 --> {top:g}\n'
            f"    bar [{', '.join(f'{r:.2f}' for _, r in bars)}]\n"
            f"    line [{', '.join(f'{limit:.2f}' for _ in bars)}]\n```"]


# 7. What the figures mean

def _footer(report: dict) -> str:
    notes: dict[str | None, str] = {"off": "memory: not measured", "mixed": "memory: measured on some shards only"}
    memory = notes.get(
        report.get("memory"), "memory: growth of resident memory during the call (peak, TMU), memray's exact heap "
                              "for memory suspects")
    return (f"<sub>time: wall clock of each test's call, less its wait for a CPU, no tracer running; {memory}; "
            "p-value: Mann-Whitney U against a git ref, sign test against a saved baseline. "
            "See the README, “What is measured, and how”.</sub>")
