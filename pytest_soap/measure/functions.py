"""A function-level profile of one test's call, for attribution: cProfile's own and cumulative time per
function with its caller edges, and memray's allocations at the heap's high-water mark with their stacks.

Profiles are taken in a run of their own (a tracer inflates the times it reports, so they never replace
the measurements) and only for regressed tests. Each function is named as the attribution needs it on
either side of a comparison: by its file relative to the project root and its qualified name, which
survive a worktree's other path and a function's move within its file. Code outside the root (the
standard library, site-packages, built-ins and C extensions) keeps cProfile's label and kind "external".
"""

from __future__ import annotations

import cProfile
import os
import pstats
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from ..changes import definitions, qualname_at
from .rss import MIB

PLUGIN_DIR = Path(__file__).resolve().parents[1]
# Allocations kept from the high-water mark, largest first: enough to name where the peak came from.
PEAK_STACKS = 200


@dataclass
class FunctionCost:
    file: str | None  # relative to the project root (posix); None outside it
    qualname: str
    lineno: int
    kind: str  # project | test | external
    own_s: float = 0.0
    cum_s: float = 0.0
    calls: int = 0
    peak_mb: float = 0.0  # held at the heap's high-water mark, allocated in it or what it called

    @property
    def key(self) -> str:
        return f"{self.file}::{self.qualname}" if self.file else self.qualname


@dataclass
class Edge:
    caller: str
    callee: str
    own_s: float  # the callee's own time when called from this caller
    cum_s: float


@dataclass
class Profile:
    total_s: float = 0.0
    functions: dict[str, FunctionCost] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    peak_stacks: list[tuple[float, list[str]]] = field(default_factory=list)  # (MiB, keys innermost first)
    peak_mb: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        return cls(data["total_s"], {k: FunctionCost(**f) for k, f in data["functions"].items()},
                   [Edge(**e) for e in data["edges"]], [(mb, list(keys)) for mb, keys in data["peak_stacks"]],
                   data["peak_mb"])


def project_root(start: Path) -> Path:
    """The repository's root (a worktree has a .git file, a clone a .git folder); else `start`."""
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def is_test_file(relative: str) -> bool:
    parts = relative.split("/")
    name = parts[-1]
    return (name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"
            or any(p in ("tests", "test", "testing") for p in parts[:-1]))


class Namer:
    """Names code locations of one process relative to its project root."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        # caches per Namer: a cache on the method would key on self and keep every Namer, with every file it
        # parsed, alive for the whole session
        self.place = cache(self._place)
        self._definitions = cache(self._read_definitions)

    def _place(self, filename: str) -> tuple[str | None, str]:
        """(path relative to the root, kind) for a code object's filename."""
        if not filename or filename.startswith("<") or filename == "~":
            return None, "external"
        path = Path(filename).resolve()
        if path.is_relative_to(PLUGIN_DIR) or "site-packages" in path.parts or "dist-packages" in path.parts:
            return None, "external"
        if not path.is_relative_to(self.root):
            return None, "external"
        relative = path.relative_to(self.root).as_posix()
        return relative, "test" if is_test_file(relative) else "project"

    def _read_definitions(self, relative: str):
        try:
            return definitions((self.root / relative).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return []

    def name(self, filename: str, line: int, label: str) -> FunctionCost:
        relative, kind = self.place(filename)
        if relative is None:
            where = f"{Path(filename).name}:{line}" if filename not in ("~", "") else ""
            return FunctionCost(None, f"{label} ({where})" if where else label, line, "external")
        qualname = qualname_at(self._definitions(relative), line) or "<module>"
        return FunctionCost(relative, qualname, line, kind)


def _from_cprofile(stats: dict, namer: Namer) -> Profile:
    profile = Profile()
    keys = {}
    for code, (_, calls, own, cum, _) in stats.items():
        f = namer.name(code[0], code[1], code[2])
        keys[code] = f.key
        mine = profile.functions.setdefault(f.key, f)
        # Comprehensions and lambdas are code objects of their own; they count as their enclosing function,
        # whose cumulative time already holds theirs.
        mine.own_s += own
        mine.cum_s = max(mine.cum_s, cum)
        if f.kind == "external" or code[2] == f.qualname.rsplit(".", 1)[-1]:
            mine.calls += calls
    edges: dict[tuple[str, str], Edge] = {}
    for code, (*_, callers) in stats.items():
        for caller, (_, _, own, cum) in callers.items():
            source, target = keys.get(caller), keys[code]
            if source is None or source == target:
                continue
            edge = edges.setdefault((source, target), Edge(source, target, 0.0, 0.0))
            edge.own_s += own
            edge.cum_s += cum
    profile.edges = list(edges.values())
    profile.total_s = sum(f.own_s for f in profile.functions.values())
    return profile


def _add_peak(profile: Profile, path: str, namer: Namer) -> None:
    import memray

    reader = memray.FileReader(path)
    try:
        profile.peak_mb = reader.metadata.peak_memory / MIB
        records = sorted(reader.get_high_watermark_allocation_records(merge_threads=True),
                         key=lambda r: r.size, reverse=True)[:PEAK_STACKS]
        for record in records:
            keys = []
            for function, filename, line in record.stack_trace():
                f = namer.name(filename, line, function)
                if f.kind == "external":
                    continue
                known = profile.functions.setdefault(f.key, f)
                if f.key not in keys:
                    keys.append(f.key)
                    known.peak_mb += record.size / MIB
            if keys:
                profile.peak_stacks.append((record.size / MIB, keys))
    finally:
        reader.close()


@contextmanager
def profiled(root: Path):
    """cProfile the block; the yielded Profile is filled when the block ends."""
    result = Profile()
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield result
    finally:
        profiler.disable()
    found = _from_cprofile(pstats.Stats(profiler).stats, Namer(root))  # type: ignore[attr-defined]
    result.total_s, result.functions, result.edges = found.total_s, found.functions, found.edges


def profile_memory(call, root: Path) -> Profile:
    """Run `call()` with memray tracking its heap. A plain function, not a generator: memray follows Python's
    frames with the profile hook, and a generator suspended inside the tracked block leaves it without stacks.
    cProfile needs the same hook, so a run profiles time or memory, never both. Every object Python allocates is
    counted, not only the arenas pymalloc takes from the system: the run happens in a process that has run the
    tests before, whose freed arenas would otherwise hide the small objects a function allocates."""
    import memray

    result = Profile()
    fd, path = tempfile.mkstemp(prefix="soap-", suffix=".memray")
    os.close(fd)
    os.remove(path)  # memray refuses to overwrite a file
    try:
        with memray.Tracker(path, trace_python_allocators=True, file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS):
            call()
        _add_peak(result, path, Namer(root))
    finally:
        if os.path.exists(path):
            os.remove(path)
    return result
