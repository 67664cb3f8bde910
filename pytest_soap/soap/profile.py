"""The overhead profile the model is given (SOAP's "overhead analysis"): one function's hits, time and
share per line from line_profiler, and per line the MiB it allocated that were still held at the heap's
peak (memray), with the peak itself.

`profile_target` runs the project's own tests that exercise the function in a pytest subprocess with the
`lineprof` plugin, in a sandbox (behind its wall) or in the project itself.
`format_profile` turns the result into the few lines worth a model's attention.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .sandbox import MIN_MEMORY_MB, Sandbox, run_limited

PLUGIN = "pytest_soap.soap.lineprof"


class ProfileError(Exception):
    """Why no profile could be taken, in one line."""


@dataclass
class LineCost:
    lineno: int  # in the file
    text: str  # the source line as written, without its newline
    hits: int
    time_s: float
    share: float  # of the function's time
    alloc_mb: float  # MiB allocated on this line (or by code it calls outside the function) and held at the heap's peak


@dataclass
class OverheadProfile:
    file: str  # relative to the project root, forward slashes
    qualname: str
    first_lineno: int  # the function's first source line (its first decorator, if any)
    calls: int
    total_s: float  # the function's time, summed over its lines (line_profiler's overhead included)
    peak_mb: float  # the heap's high-water mark during one test call, the highest of all calls
    lines: list[LineCost] = field(default_factory=list)  # lines that ran or allocated, in code order
    notes: list[str] = field(default_factory=list)  # what the reader should know, e.g. failing tests

    @property
    def key(self) -> str:
        return f"{self.file}::{self.qualname}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> OverheadProfile:
        return cls(**{**data, "lines": [LineCost(**line) for line in data["lines"]],
                      "notes": list(data.get("notes", []))})


def profile_target(where: Path | Sandbox, file: str, qualname: str, nodeids: list[str], timeout_s: float,
                   memory_mb: int = MIN_MEMORY_MB, env: dict[str, str] | None = None) -> OverheadProfile:
    """Run `nodeids` under the line profiler with `file::qualname` as the target, under the sandbox's limits:
    in a sandbox, behind its wall (it profiles model-written code too); else in the project at `where`, with
    `env` (default: this process's). Failing tests still give a profile (with a note); a timeout, a target the
    tests never call, a run the wall stopped, or no profile at all is a ProfileError."""
    key = f"{file}::{qualname}"
    with ExitStack() as stack:
        if isinstance(where, Sandbox):
            out, env = where.scratch_file("profile", ".json"), where.env()
            run = functools.partial(where.run, cwd=where.path)
        else:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soap-profile-"))) / "profile.json"
            env = env or dict(os.environ)
            run = functools.partial(run_limited, cwd=where, env=env, log=out.with_suffix(".log"))
        cmd = [sys.executable, "-m", "pytest", *nodeids, "-p", PLUGIN, f"--soap-line-target={key}",
               f"--soap-line-out={out}", "-p", "no:cacheprovider", "-q", *_one_process(env)]
        finished = run(cmd, timeout_s=timeout_s, memory_mb=memory_mb)
        if finished.refused:
            raise ProfileError(f"stopped by the sandbox's wall: {finished.refused}")
        if finished.timed_out:
            raise ProfileError(f"the tests took longer than {timeout_s:g} s under the line profiler; stopped")
        returncode, output = finished.returncode, finished.output
        data = _read(out)
    last_line = _last_line(output)
    if data is not None and "error" in data:
        raise ProfileError(data["error"])
    if returncode == 5:
        raise ProfileError(f"no tests ran: {last_line}")
    if returncode not in (0, 1) or data is None:
        raise ProfileError(f"pytest stopped (exit code {returncode}): {_error_line(output)}")
    profile = OverheadProfile.from_dict(data)
    failed = f" (the tests did not all pass: {last_line})" if returncode == 1 else ""
    if profile.calls == 0:
        raise ProfileError(f"the tests never called {key}{failed}")
    if failed:
        profile.notes.append(f"the tests did not all pass ({last_line}): the profile covers the calls made")
    return profile


def _one_process(env: dict[str, str]) -> list[str]:
    """`-n 0` where pytest-xdist loads: a project's `addopts = -n auto` would scatter the calls over workers,
    each writing its own profile over the others'."""
    if importlib.util.find_spec("xdist") is None or env.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    return ["-n", "0"]


def _read(out: Path) -> dict | None:
    try:
        return json.loads(out.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise ProfileError(f"the profile file is unreadable: {e}") from None


def _last_line(output: str) -> str:
    """pytest's summary ("1 failed, 2 passed in 0.31s"), the last line it prints."""
    lines = [line.strip(" =") for line in output.splitlines() if line.strip(" =")]
    return lines[-1] if lines else "no output"


def _error_line(output: str) -> str:
    """What stopped pytest: its last line that says "error:", else its last line."""
    errors = [line.strip() for line in output.splitlines() if "error:" in line.lower()]
    return errors[-1] if errors else _last_line(output)


# ---- the text the model reads -----------------------------------------------------------------------------

COLUMNS = ("line", "hits", "time", "share", "MiB @peak")
# What a profile shows, for the paper's ablations: both line reports, one of them, the totals only, or nothing.
VIEWS = {"both": COLUMNS, "time": ("line", "hits", "time", "share"), "memory": ("line", "hits", "MiB @peak"),
         "summary": (), "none": ()}


def format_profile(p: OverheadProfile, max_lines: int = 12, view: str = "both") -> str:
    """The profile as a short table: the `max_lines` lines that cost most in time or allocation (in what the
    view shows), in code order, "…" where lines were left out. The same profile always gives the same text."""
    if view == "none":
        return ""
    columns = VIEWS[view]
    calls = f"{p.calls} call" + ("" if p.calls == 1 else "s")
    text = [f"{p.key} — {calls}, {_duration(p.total_s)} total, peak heap {p.peak_mb:.1f} MiB"]
    if not columns:
        return "\n".join(text + [f"note: {note}" for note in p.notes])
    shown = _lines_that_matter(p.lines, max_lines, time="time" in columns, memory="MiB @peak" in columns)
    indent = _common_indent([line.text for line in p.lines])
    cells = {"line": lambda c: str(c.lineno), "hits": lambda c: str(c.hits), "time": lambda c: _duration(c.time_s),
             "share": lambda c: f"{c.share * 100:.1f}%", "MiB @peak": lambda c: _mib(c.alloc_mb)}
    rows = [[cells[column](p.lines[i]) for column in columns] for i in shown]
    widths = [max([len(title), *(len(row[col]) for row in rows)]) for col, title in enumerate(columns)]
    text.append("  ".join(title.rjust(width) for title, width in zip(columns, widths)) + "  code")
    skipped = "…".rjust(widths[0])
    previous = -1
    for index, row in zip(shown, rows):
        if index > previous + 1:
            text.append(skipped)
        line = "  ".join(cell.rjust(width) for cell, width in zip(row, widths))
        text.append(f"{line}  {p.lines[index].text[indent:]}")
        previous = index
    if previous < len(p.lines) - 1:
        text.append(skipped)
    text += [f"note: {note}" for note in p.notes]
    return "\n".join(text)


def _lines_that_matter(lines: list[LineCost], max_lines: int, time: bool = True, memory: bool = True) -> list[int]:
    """Indices of the lines with the largest share of the time or of the allocations, in code order."""
    allocated = sum(line.alloc_mb for line in lines) or 1.0
    def weight(line: LineCost) -> float:
        return max(line.share if time else 0.0, line.alloc_mb / allocated if memory else 0.0)
    ranked = sorted(range(len(lines)), key=lambda i: (-weight(lines[i]), lines[i].lineno))
    return sorted(ranked[:max_lines])


def _common_indent(texts: list[str]) -> int:
    """The body's own indentation, so a method's lines read as a function's."""
    indents = [len(t) - len(t.lstrip()) for t in texts if t.strip()]
    return min(indents, default=0)


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def _mib(mb: float) -> str:
    if mb <= 0:
        return "-"
    return f"{mb:.1f}" if mb >= 0.05 else "<0.1"
