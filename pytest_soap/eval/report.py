"""The eval's outputs: the paper-style Markdown table, the JSON record, and an SVG plot of NET, NMU and NTMU
by round (a few lines of SVG, written here: a plotting library would weigh more than all of pytest-soap)."""

from __future__ import annotations

import html

from ..report.units import mebibyte_seconds, mebibytes, seconds
from ..soap import CandidateStatus
from .metrics import RoundRow, change
from .run import METRICS, TOKENS, ProblemResult, ProblemStatus, Settings

SCHEMA = 1


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%".replace("-", "−")


def markdown(rows: list[RoundRow], results: list[ProblemResult], settings: Settings, dataset: str) -> str:
    lines = [f"## soap eval: {dataset}", "",
             f"Model `{settings.model}`, {settings.iterations} rounds, profile given to the model: `{settings.profile}`, "
             f"task descriptions from `{settings.descriptions}`; {_spent(results)}. "
             f"Metrics `{settings.metrics}`: {METRICS[settings.metrics]}.", "",
             "| round | pass@1 | ET (s) | NET | MU (MiB) | NMU | TMU (MiB·s) | NTMU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        label = "0 (initial)" if row.round == 0 else str(row.round)
        share = "-" if row.pass_at_1 is None else f"{row.pass_at_1 * 100:.1f}% ({row.passed}/{row.problems})"
        lines.append(f"| {label} | {share} | {_number(row.et, 4)} | {_number(row.net)} | {_number(row.mu)} | "
                     f"{_number(row.nmu)} | {_number(row.tmu, 4)} | {_number(row.ntmu)} |")
    if len(rows) > 1 and rows[0].measured:
        first, last = rows[0], rows[-1]
        lines += ["", f"Round 0 to round {last.round}, on the {first.measured} problems correct at every round: "
                      f"ET {_percent(change(first.et, last.et))}, MU {_percent(change(first.mu, last.mu))}, "
                      f"TMU {_percent(change(first.tmu, last.tmu))}."]
    lines += ["", "NET, NMU and NTMU: the code's total over the canonical solutions' total on the same problems "
                  "(1.00 = as efficient as the canonical solutions).", "",
              "| problem | status | ET | peak | TMU | loop |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r.idx} {r.name} | {_status(r)} | {_trend(r, 'time_s', seconds)} | "
                     f"{_trend(r, 'peak_mb', mebibytes)} | {_trend(r, 'tmu_mbs', mebibyte_seconds)} | {_loop(r)} |")
    return "\n".join(lines) + "\n"


def _spent(results: list[ProblemResult]) -> str:
    tokens = {key: sum(r.tokens[key] for r in results) for key in ("input", "output")}
    cost = _total_cost(results)
    return (f"{tokens['input']:,} input and {tokens['output']:,} output tokens"
            + (f", about ${cost:.2f} at list prices" if cost is not None and cost >= 0.01 else
               f", about ${cost:.4f} at list prices" if cost is not None else ""))


def _status(r: ProblemResult) -> str:
    if r.status != ProblemStatus.OPTIMISED:
        return f"{r.status}: {r.reason}".replace("|", "\\|")
    first, last = r.rounds[0], r.rounds[-1]
    if first.passed and last.passed:
        return "passes"
    return f"hidden tests: {'passed' if first.passed else first.reason} → {'passed' if last.passed else last.reason}".replace("|", "\\|")


def _trend(r: ProblemResult, field: str, unit) -> str:
    if not r.rounds or not (r.rounds[0].passed and r.rounds[-1].passed):
        return "-"
    return f"{unit(getattr(r.rounds[0], field))} → {unit(getattr(r.rounds[-1], field))}"


def _loop(r: ProblemResult) -> str:
    if not r.loop:
        return "-"
    kept = sum(1 for c in r.loop["candidates"] if c["status"] == CandidateStatus.ACCEPTED)
    return f"{r.loop['status']}, {kept} kept of {len(r.loop['candidates'])}"


def record(rows: list[RoundRow], results: list[ProblemResult], settings: Settings, dataset: str) -> dict:
    return {"schema": SCHEMA, "dataset": dataset, "model": settings.model, "iterations": settings.iterations,
            "profile": settings.profile, "descriptions": settings.descriptions, "metrics": settings.metrics,
            "metrics_definition": METRICS[settings.metrics], "rounds": [row.to_dict() for row in rows],
            "problems": [r.to_dict() for r in results],
            "tokens": {key: sum(r.tokens[key] for r in results) for key in TOKENS},
            "cost_usd": _total_cost(results)}


def _total_cost(results: list[ProblemResult]) -> float | None:
    costs = [r.cost_usd for r in results if r.cost_usd is not None]
    return round(sum(costs), 6) if costs else None


SERIES = (("net", "NET", "#1f77b4"), ("nmu", "NMU", "#ff7f0e"), ("ntmu", "NTMU", "#2ca02c"))


def svg(rows: list[RoundRow], title: str) -> str:
    """NET, NMU and NTMU by round, with the canonical solutions' level (1.0) dashed."""
    width, height, left, right, top, bottom = 640, 360, 56, 110, 36, 44
    values = [getattr(row, key) for row in rows for key, _, _ in SERIES if getattr(row, key) is not None]
    high = max([1.0, *values]) * 1.1
    last = max(len(rows) - 1, 1)
    x = lambda k: left + (width - left - right) * k / last
    y = lambda v: top + (height - top - bottom) * (1 - v / high)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="20" font-size="14">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{y(0)}" x2="{width - right}" y2="{y(0)}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y(0)}" stroke="black"/>',
             f'<line x1="{left}" y1="{y(1):.1f}" x2="{width - right}" y2="{y(1):.1f}" stroke="gray" stroke-dasharray="4 4"/>',
             f'<text x="{width - right + 6}" y="{y(1) + 4:.1f}" fill="gray">canonical</text>',
             f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">round</text>']
    for k in range(len(rows)):
        parts.append(f'<text x="{x(k):.1f}" y="{y(0) + 16:.1f}" text-anchor="middle">{rows[k].round}</text>')
    for tick in range(5):
        v = high * tick / 4
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for n, (key, label, colour) in enumerate(SERIES):
        points = [(x(k), y(getattr(row, key))) for k, row in enumerate(rows) if getattr(row, key) is not None]
        if points:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                         + " ".join(f"{px:.1f},{py:.1f}" for px, py in points) + '"/>')
            parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>' for px, py in points]
        legend_y = top + 18 * n
        parts.append(f'<line x1="{width - right + 6}" y1="{legend_y + 18}" x2="{width - right + 26}" '
                     f'y2="{legend_y + 18}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{width - right + 30}" y="{legend_y + 22}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
