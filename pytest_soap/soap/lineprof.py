"""A pytest plugin that profiles one function line by line while the tests run, loaded with
`-p pytest_soap.soap.lineprof --soap-line-target=FILE::QUALNAME --soap-line-out=PATH`.

Two passes in one session, because each tracer would spoil the other's figures: memray's hooks slow every
line line_profiler times, and line_profiler's bookkeeping allocates in the middle of the target's lines,
where memray would charge it to them. First pytest's own run, with line_profiler timing each test call.
Then each test that called the target once more, with fresh function fixtures and nothing reported, and
memray recording each allocation of the test function's call. A second pass in the same session spares a
second start-up and collection. At the session's end the OverheadProfile, or {"error": one line}, goes to
PATH as JSON.
"""

from __future__ import annotations

import cProfile
import importlib
import inspect
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import CodeType, FunctionType
from typing import TYPE_CHECKING

import line_profiler
import memray
import pytest

from ..rerun import run_again
from .profile import LineCost, OverheadProfile

if TYPE_CHECKING:
    from pluggy import HookCaller

MIB = 2**20


class TargetError(Exception):
    """The target cannot be found or read; one line."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("soap-line", "pytest-soap: one function's line profile")
    group.addoption("--soap-line-target", metavar="FILE::QUALNAME", default=None,
                    help="profile this function line by line while the tests run (FILE relative to the rootdir; "
                         "QUALNAME 'func' or 'Class.method')")
    group.addoption("--soap-line-out", metavar="PATH", default=None,
                    help="where the line profile goes, as JSON, at the session's end")


def pytest_configure(config: pytest.Config) -> None:
    target, out = config.getoption("soap_line_target"), config.getoption("soap_line_out")
    if target is None and out is None:
        return
    if not (target and out):
        raise pytest.UsageError("pytest-soap: --soap-line-target and --soap-line-out go together")
    file, _, qualname = target.partition("::")
    if not file or not qualname:
        raise pytest.UsageError(f"pytest-soap: --soap-line-target wants FILE::QUALNAME, not {target!r}")
    config.pluginmanager.register(LineProfiling(config, file, qualname, Path(out)), "soap-lineprof")


class LineProfiling:
    def __init__(self, config: pytest.Config, file: str, qualname: str, out: Path):
        self.config = config
        self.file = Path(file).as_posix()
        self.qualname = qualname
        self.out = out
        self.path = (config.rootpath / file).resolve()
        self.error: str | None = None
        self.source: list[str] = []
        self.first_lineno = 0
        self.codes: list[CodeType] = []
        self.timer = line_profiler.LineProfiler()
        self.counter = CallCounter(self.codes)
        self.calling: list[pytest.Item] = []  # the tests that called the target, in the order they ran
        self.memory_pass = False
        self.memory_measured = False
        self.allocated: Counter[int] = Counter()  # bytes per line
        self.peak_bytes = 0
        self.in_target_file: dict[str, bool] = {}
        self.tmp = Path()
        self.call_test: HookCaller | None = None  # set for the memory pass

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # After collection the test modules have imported the target's module, so this is the function
        # object they call.
        try:
            functions = find_functions(self.path, self.file, self.qualname)
            self.source, self.first_lineno = _source(functions[0], f"{self.file}::{self.qualname}")
        except TargetError as e:
            self.error = str(e)
            pytest.exit(f"pytest-soap: {e}", returncode=pytest.ExitCode.USAGE_ERROR)
        for function in functions:
            self.timer.add_function(function)
            self.codes.append(function.__code__)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        if not self.codes or self.memory_pass:
            return (yield)
        calls = self.counter.calls()
        self.counter.enable()
        self.timer.enable_by_count()
        try:
            return (yield)
        finally:
            self.timer.disable_by_count()
            self.counter.disable()
            if self.counter.calls() > calls:
                self.calling.append(item)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session):
        result = yield
        if self.codes and not (session.shouldfail or session.shouldstop):
            self._memory_pass(self.calling)
        return result

    def _memory_pass(self, items: list[pytest.Item]) -> None:
        self.call_test = self.config.pluginmanager.subset_hook_caller("pytest_pyfunc_call", remove_plugins=[self])
        self.memory_pass = True
        try:
            with tempfile.TemporaryDirectory(prefix="soap-lineprof-") as tmp:
                self.tmp = Path(tmp)
                for item, nextitem in zip(items, [*items[1:], None]):
                    run_again(item, nextitem)
        finally:
            self.memory_pass = False
        self.memory_measured = True

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function):
        # Here and not in the pytest_runtest_call wrapper: memray follows Python's frames, and a generator
        # suspended inside its Tracker leaves it without stacks.
        if not self.memory_pass or self.call_test is None:
            return None
        path = self.tmp / "call.memray"
        try:
            # Python's own allocator too, or small objects (ints, tuples, list nodes) would not count.
            # Aggregated: the stacks of what is held at the heap's peak, not every allocation, which on a
            # parser of 80,000 lines meant millions of records to read and a 9 s profile.
            with memray.Tracker(path, file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS, trace_python_allocators=True):
                self.call_test(pyfuncitem=pyfuncitem)
            return True
        finally:
            if path.exists():
                self._add_allocations(path)
                path.unlink()  # memray refuses to overwrite a file

    def _add_allocations(self, path: Path) -> None:
        """What the call held at its heap's peak, each allocation going to the innermost frame on its stack
        that runs one of the target's lines (the paper's per-line memory increment, near enough)."""
        last_lineno = self.first_lineno + len(self.source) - 1
        with memray.FileReader(path) as reader:
            self.peak_bytes = max(self.peak_bytes, reader.metadata.peak_memory)
            for record in reader.get_high_watermark_allocation_records(merge_threads=True):
                for _, filename, lineno in record.stack_trace():
                    if self.first_lineno <= lineno <= last_lineno and self._is_target_file(filename):
                        self.allocated[lineno] += record.size
                        break

    def _is_target_file(self, filename: str) -> bool:
        if filename not in self.in_target_file:
            self.in_target_file[filename] = Path(filename).resolve() == self.path
        return self.in_target_file[filename]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        data = {"error": self.error} if self.error else self._profile().to_dict()
        self.out.write_text(json.dumps(data), encoding="utf-8")

    def _profile(self) -> OverheadProfile:
        stats = self.timer.get_stats()
        hits: Counter[int] = Counter()
        seconds: Counter[int] = Counter()
        # One entry per code object; a module imported under two names gives two, for the same lines.
        for entries in stats.timings.values():
            for lineno, count, time in entries:
                hits[lineno] += count
                seconds[lineno] += time * stats.unit  # type: ignore[assignment]  # a Counter adds floats too
        total = sum(seconds.values())
        linenos = sorted(n for n in set(hits) | set(self.allocated)
                         if 0 <= n - self.first_lineno < len(self.source))
        lines = [LineCost(n, self.source[n - self.first_lineno].rstrip("\r\n"), hits[n], seconds[n],
                          seconds[n] / total if total else 0.0, self.allocated[n] / MIB) for n in linenos]
        notes = [] if self.memory_measured else ["memory was not measured: the run stopped before its memory pass"]
        return OverheadProfile(self.file, self.qualname, self.first_lineno, self.counter.calls(), total,
                               self.peak_bytes / MIB, lines, notes)


if sys.version_info >= (3, 12):
    class CallCounter:
        """How often the target's code starts; line_profiler counts lines, not calls. A sys.monitoring tool of
        its own sees the target's starts only, at no cost to any other code."""

        def __init__(self, codes: list[CodeType]):
            self.codes = codes
            self.count = 0
            self.tool = -1

        def _started(self, code: CodeType, offset: int) -> None:
            self.count += 1

        def enable(self) -> None:
            monitoring = sys.monitoring
            # Not PROFILER_ID: line_profiler holds it.
            self.tool = next((t for t in (3, 4, 5) if monitoring.get_tool(t) is None), -1)
            if self.tool < 0:
                raise RuntimeError("pytest-soap: no sys.monitoring tool id is free to count the target's calls")
            monitoring.use_tool_id(self.tool, "pytest-soap")
            monitoring.register_callback(self.tool, monitoring.events.PY_START, self._started)
            for code in self.codes:
                monitoring.set_local_events(self.tool, code, monitoring.events.PY_START)

        def disable(self) -> None:
            monitoring = sys.monitoring
            for code in self.codes:
                monitoring.set_local_events(self.tool, code, monitoring.events.NO_EVENTS)
            monitoring.register_callback(self.tool, monitoring.events.PY_START, None)
            monitoring.free_tool_id(self.tool)

        def calls(self) -> int:
            return self.count
else:
    class CallCounter:
        """How often the target was called; line_profiler counts lines, not calls. cProfile on the profile hook
        (line_profiler holds the trace hook) counts them, adding a little to the time of lines that call
        Python functions, and counting a generator's every resumption as a call. (From 3.12 cProfile
        wants the monitoring tool line_profiler holds.)"""

        def __init__(self, codes: list[CodeType]):
            self.codes = codes
            self.profiler = cProfile.Profile(builtins=False)

        def enable(self) -> None:
            self.profiler.enable()

        def disable(self) -> None:
            self.profiler.disable()

        def calls(self) -> int:
            return sum(entry.callcount for entry in self.profiler.getstats() if entry.code in self.codes)


def find_functions(path: Path, file: str, qualname: str) -> list[FunctionType]:
    """The target's function in every loaded module from `path` (a module imported under two names is two
    modules), else in the module imported from it by name."""
    if not path.is_file():
        raise TargetError(f"no such file: {file}")
    modules = [m for m in list(sys.modules.values()) if _module_path(m) == path] or [_import(path, file)]
    return [_function_in(module, path, file, qualname) for module in modules]


def _module_path(module) -> Path | None:
    filename = getattr(module, "__file__", None)
    return Path(filename).resolve() if isinstance(filename, str) else None


def _import(path: Path, file: str):
    """Import the module by its dotted name under a sys.path entry, the deepest entry first (src/pkg/m.py
    is pkg.m, not src.pkg.m)."""
    names = []
    for entry in sys.path:
        base = Path(entry or os.getcwd()).resolve()
        if path.is_relative_to(base):
            parts = path.relative_to(base).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            if parts and all(part.isidentifier() for part in parts):
                names.append(".".join(parts))
    for name in sorted(set(names), key=lambda n: n.count(".")):
        try:
            module = importlib.import_module(name)
        except Exception as e:
            first_line = str(e).partition("\n")[0]
            raise TargetError(f"cannot import {file} as {name}: {type(e).__name__}: {first_line}") from None
        if _module_path(module) == path:
            return module
    raise TargetError(f"cannot import {file}: the tests did not import it, and no sys.path entry holds it")


def _function_in(module, path: Path, file: str, qualname: str) -> FunctionType:
    found = module
    for part in qualname.split("."):
        try:
            found = inspect.getattr_static(found, part)  # a staticmethod or classmethod as defined, not bound
        except AttributeError:
            raise TargetError(f"{file} has no {qualname}") from None
    function = inspect.unwrap(getattr(found, "__func__", found))  # decorators made with functools.wraps
    if not inspect.isfunction(function):
        raise TargetError(f"{file}::{qualname} is not a Python function")
    if Path(function.__code__.co_filename).resolve() != path:
        raise TargetError(f"{file}::{qualname} is defined in {function.__code__.co_filename}, not in {file}")
    return function


def _source(function: FunctionType, key: str) -> tuple[list[str], int]:
    try:
        return inspect.getsourcelines(function)
    except OSError:
        raise TargetError(f"cannot read the source of {key}") from None
