"""A pytest plugin that records a target function's calls while the original's tests run.

    pytest -p pytest_soap.soap.record --soap-record-target=FILE::QUALNAME --soap-record-out=PATH

FILE is relative to the directory pytest runs in (the sandbox's tree). After collection, when the tests
have imported the code, the target is replaced by a recording wrapper: in its module (or on its class),
and wherever a module holds it under another name (`from pkg.calc import total` in a test module). Each
call is kept as pickles: the arguments before the call, then the result or the exception, then the
arguments after it, which shows what the call mutated. replay.py plays them into a candidate.
"""

from __future__ import annotations

import copyreg
import functools
import importlib
import io
import pickle
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MAX_CALLS = 200  # calls tried per session: enough variety, and a hot target stops paying for pickles soon
# Pickled bytes per call, arguments before and after and result together, and for all calls: a test's
# realistic data (the demo parses a 5 MiB export) must fit, a suite's worth of them need not.
MAX_BYTES = 64 << 20
MAX_TOTAL_BYTES = 256 << 20


class TargetError(Exception):
    """A target that cannot be found, imported or wrapped; the message is one line."""


@dataclass
class Call:
    args: bytes  # pickled (args, kwargs) before the call
    after: bytes  # pickled (args, kwargs) after it
    returned: bytes | None  # pickled result; None when it raised
    raised: tuple[str, str] | None  # the exception's type (module.qualname) and message


@dataclass
class Records:
    file: str  # the target's file, relative to where pytest ran
    qualname: str
    module: str  # the dotted name it was imported by
    import_root: str  # the sys.path entry that name is relative to, relative to where pytest ran ("" there)
    calls: list[Call] = field(default_factory=list)
    skipped: int = 0  # calls that could not be kept: unpicklable, too big, or not reproducible


def split_target(spec: str) -> tuple[str, str]:
    file, sep, qualname = spec.rpartition("::")
    if not sep or not file or not qualname:
        raise TargetError(f"{spec!r} is not FILE::QUALNAME")
    return file, qualname


def exception_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def message_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<a message that could not be read>"


def module_file(module: object) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if isinstance(file, str) else None


def resolve_function(module: types.ModuleType, qualname: str) -> tuple[object, str, object, object]:
    """(owner, name, raw, function): the module or class that defines it, the attribute's name, the
    attribute as defined (a staticmethod or classmethod object for those) and the callable itself."""
    parts = qualname.split(".")
    if "<locals>" in parts:
        raise TargetError(f"{qualname} is defined inside a function: only functions and methods can be recorded")
    owner: object = module
    for depth, part in enumerate(parts[:-1], 1):
        owner = vars(owner).get(part)
        if not isinstance(owner, type):
            raise TargetError(f"{module.__name__} has no class {'.'.join(parts[:depth])}")
    raw = vars(owner).get(parts[-1])
    function = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    if function is None or not callable(function) or isinstance(function, type):
        raise TargetError(f"{module.__name__} defines no function {qualname}")
    return owner, parts[-1], raw, function


def _stream(kind: type, content: str | bytes, position: int) -> io.StringIO | io.BytesIO:
    stream = kind(content)
    stream.seek(position)
    return stream


# An in-memory stream (an "open file" in a test) is kept by its content and position: pickle refuses it,
# and a function that reads one is as common as one that takes a list. After the call, the position
# shows how far the call read.
for _kind in (io.StringIO, io.BytesIO):
    copyreg.pickle(_kind, lambda s: (_stream, (type(s), s.getvalue(), s.tell())))


def _pickled(value: object) -> bytes | None:
    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:  # a lambda, a lock, a generator, a __reduce__ that raises...
        return None


class Recorder:
    """Wraps the target; keeps up to MAX_CALLS outermost calls (a recursive target's inner calls are part
    of its outer call's behaviour, not calls of their own)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.skipped = 0
        self.total = 0  # bytes kept
        self._inside = threading.local()

    def wrap(self, function):
        @functools.wraps(function)
        def recording(*args, **kwargs):
            if getattr(self._inside, "active", False) or len(self.calls) + self.skipped >= MAX_CALLS:
                return function(*args, **kwargs)
            before = _pickled((args, kwargs))
            self._inside.active = True
            try:
                result = function(*args, **kwargs)
            except Exception as exc:
                self._keep(before, args, kwargs, None, (exception_name(type(exc)), message_of(exc)))
                raise
            finally:
                self._inside.active = False
            self._keep(before, args, kwargs, _pickled(result), None)
            return result

        return recording

    def _keep(self, before: bytes | None, args, kwargs, returned: bytes | None, raised: tuple[str, str] | None) -> None:
        after = _pickled((args, kwargs)) if before is not None else None
        outcome_known = returned is not None or raised is not None
        size = len(before or b"") + len(after or b"") + len(returned or b"")
        if before is None or after is None or not outcome_known or size > MAX_BYTES \
                or self.total + size > MAX_TOTAL_BYTES:
            self.skipped += 1
            return
        self.total += size
        self.calls.append(Call(before, after, returned, raised))


def find_module(root: Path, file: str) -> tuple[types.ModuleType, str, str]:
    """The module loaded from root/file, its dotted name and its import root (relative to root): the one
    the tests imported if they did, else imported now by the name its path has under a sys.path entry."""
    path = (root / file).resolve()
    if not path.is_file():
        raise TargetError(f"{file} does not exist in {root}")
    for name, module in list(sys.modules.items()):
        if module_file(module) == path and (base := _import_root(name, path)) is not None:
            return module, name, _relative_root(base, root, name)
    name, base = _dotted_name(path, file)
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        raise TargetError(f"could not import {name} from {file}: {type(exc).__name__}: {message_of(exc)}") from None
    return module, name, _relative_root(base, root, name)


def _import_root(name: str, path: Path) -> Path | None:
    """The folder from which `name` imports `path`, or None if the name does not match the path."""
    location = path.parent if path.name == "__init__.py" else path.with_suffix("")
    for part in reversed(name.split(".")):
        if location.name != part:
            return None
        location = location.parent
    return location


def _dotted_name(path: Path, file: str) -> tuple[str, Path]:
    names = []
    for entry in sys.path:
        base = Path(entry or ".").resolve()
        if not path.is_relative_to(base):
            continue
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts and parts[-1] == "__init__":
            parts.pop()
        if parts and all(part.isidentifier() for part in parts):
            names.append((len(parts), ".".join(parts), base))
    if not names:
        raise TargetError(f"{file} is not importable from any sys.path entry")
    _, name, base = min(names)
    return name, base


def _relative_root(base: Path, root: Path, name: str) -> str:
    if not base.is_relative_to(root.resolve()):
        raise TargetError(f"{name} is imported from {base}, outside {root}")
    relative = base.relative_to(root.resolve())
    return "" if relative == Path() else relative.as_posix()


class Recording:
    """The plugin's state for one session: what was replaced, to put it back."""

    def __init__(self, root: Path, file: str, qualname: str, out: Path):
        self.root, self.file, self.qualname, self.out = root, file, qualname, out
        self.recorder = Recorder()
        self.records: Records | None = None
        self._undo: list[tuple[object, str, object, object]] = []  # (holder, attribute, original, replacement)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        try:
            module, name, import_root = find_module(self.root, self.file)
            owner, attribute, raw, function = resolve_function(module, self.qualname)
        except TargetError as exc:
            raise pytest.UsageError(f"--soap-record-target: {exc}") from None
        self.records = Records(self.file, self.qualname, name, import_root)
        wrapper = self.recorder.wrap(function)
        replacement = type(raw)(wrapper) if isinstance(raw, (staticmethod, classmethod)) else wrapper
        setattr(owner, attribute, replacement)
        self._undo.append((owner, attribute, raw, replacement))
        if isinstance(owner, types.ModuleType):
            self._rebind_imported_copies(owner, function, wrapper)

    def _rebind_imported_copies(self, owner: types.ModuleType, function, wrapper) -> None:
        """`from module import function` copied the function into the importing module before we came."""
        for module in list(sys.modules.values()):
            if isinstance(module, types.ModuleType) and module is not owner:
                for key, value in list(vars(module).items()):
                    if value is function:
                        setattr(module, key, wrapper)
                        self._undo.append((module, key, function, wrapper))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for holder, key, original, replacement in reversed(self._undo):
            if vars(holder).get(key) is replacement:
                setattr(holder, key, original)
        self._undo.clear()
        if self.records is not None:
            self.records.calls, self.records.skipped = self.recorder.calls, self.recorder.skipped
            with open(self.out, "wb") as out:
                pickle.dump(self.records, out, pickle.HIGHEST_PROTOCOL)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("soap-record", "pytest-soap: record a function's calls for the differential check")
    group.addoption("--soap-record-target", metavar="FILE::QUALNAME", help="the function whose calls to record")
    group.addoption("--soap-record-out", metavar="PATH", help="where to write the records (a pickle)")


def pytest_configure(config: pytest.Config) -> None:
    spec, out = config.getoption("soap_record_target"), config.getoption("soap_record_out")
    if not spec:
        return
    if not out:
        raise pytest.UsageError("--soap-record-target needs --soap-record-out")
    try:
        file, qualname = split_target(spec)
    except TargetError as exc:
        raise pytest.UsageError(f"--soap-record-target: {exc}") from None
    config.pluginmanager.register(Recording(config.invocation_params.dir, file, qualname, Path(out)), "soap-record")
