"""Check a candidate where its calls happen, then race it against the best on the regressed tests: one
pytest session in the sandbox, and nothing crosses a process but the verdict.

    python -m pytest NODEIDS -p pytest_soap.soap.verify --soap-verify=SPEC.json

The sandbox's tree holds the candidate, so the tests run it as it would be committed. SPEC (JSON) names the
target's file and qualname, the original's module text, the best version's (the champion's), the tests to
race on, the race's statistics and where to write the result.

After collection, each version other than the tree's is laid over the live module: only the definitions
that differ from the tree's are compiled, against the module's own globals and classes, so every object the
tests hold stays one of the tree's (an isinstance check or a registry sees no second class). A function's
new code is swapped into the tree's own function object, so its decorators never run twice and every
reference to it runs the version applied; what cannot be swapped is rebound, in the module, on its classes
and wherever another module imported it.

The check: each function the candidate changed (and the target) is wrapped. For a bounded sample of calls
(spread over the run and over the tests, within a time budget), the arguments are deep-copied before anything
runs; the original runs first on a copy, then the candidate on the test's own arguments, so the test sees the
candidate. Compared: the return values (floats with a
tolerance; a generator's items), the exceptions' types and messages, the arguments' state after the call,
and the module's globals and the class's attributes (a change the candidate makes that the original does
not). A difference is checked against a second run of the original on a second copy: a call whose result
depends on chance or the clock is set aside, not held against the candidate.

The race: once every test passed and nothing differed, the regressed tests run again in this warm process,
champion and candidate in turn (A B B A ...), each sample timing their calls; then one run of each under
tracemalloc for the peak. The loop judges the figures with the gate's statistics.
"""

from __future__ import annotations

import ast
import collections
import copy
import gc
import importlib
import inspect
import itertools
import json
import math
import re
import sys
import textwrap
import threading
import time
import tracemalloc
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import pytest

from ..stats import mann_whitney_greater

# Calls checked per function: when the original's run counted them, spread evenly over the whole run, with
# every test's first call (a wrong sqlparse revision differed on 3% of imt's calls, all late in the run);
# else the first this many, and after them the 256th, 512th, ...
MAX_SAMPLED = 200
# The time the check may add to the run (copies, the original's runs) when the spec does not say: then it
# samples no more. The loop gives it twice the original's run of the covering tests (see loop.sampling_budget).
CHECK_BUDGET_S = 5.0
CONTROLLED = 20  # a function's first sampled calls get a second copy, to tell chance from a difference
MAX_COPY_OBJECTS = 200_000  # arguments larger than this (or MAX_COPY_MB) are not copied: the call is too big
MAX_COPY_MB = 64
MAX_ITEMS = 10_000  # items of a returned iterator that are compared
MIN_PAIRS, MAX_PAIRS = 5, 9  # race samples a side: 5 and 5 reach p = 0.004; undecided ones get up to 9
MIN_SAMPLE_S = 0.005  # a race sample repeats the tests until it takes this long, so the timer's noise is small
MAX_REPEAT = 50
SHORT = 100  # characters of a value's repr in a mismatch
_ABSENT = object()
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


class TargetError(Exception):
    """A target or a version that cannot be found, loaded or wrapped; the message is one line."""


def message_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<a message that could not be read>"


def exception_text(exc: BaseException) -> str:
    message = message_of(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# --- comparing values -----------------------------------------------------------------------------------------


def same(a: object, b: object) -> bool:
    """Equal as results: recursively through containers and through the state of objects whose class leaves
    == to identity (a parse tree whose nodes point to their parents included: a pair already being compared
    counts as equal), floats within rel 1e-9 / abs 1e-12 (NaN equals NaN), other objects by ==. Types must
    match (3 is not 3.0) except among floats."""
    try:
        return _same(a, b, set())
    except RecursionError:  # nested deeper than the stack: compare the text, at worst a false difference
        return short(a, 10**6) == short(b, 10**6)


def _same(a: Any, b: Any, seen: set) -> bool:
    if a is b:
        return True
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if type(a) is not type(b):
        return False
    if isinstance(a, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type, types.ModuleType)):
        return getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None) \
            and getattr(a, "__module__", None) == getattr(b, "__module__", None)
    pair = (id(a), id(b))
    if pair in seen:
        return True
    seen.add(pair)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, seen) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key], seen) for key in a)
    if isinstance(a, (set, frozenset)):
        if a == b:
            return True
        # Floats that differ in the last digits are different set members: match what is left pairwise.
        only_a, only_b = [x for x in a if x not in b], [y for y in b if y not in a]
        return len(a) == len(b) and len(only_a) == len(only_b) and _match_all(only_a, only_b, seen)
    if type(a).__eq__ is not object.__eq__:
        try:
            equal = a == b
            if equal is not NotImplemented:
                return bool(equal)
        except Exception:
            pass  # an == that raises, or answers with something that is not a truth value (an array)
    state_a, state_b = _state(a), _state(b)
    if state_a is None or state_b is None:
        return short(a, 10**4) == short(b, 10**4) and _ADDRESS.search(short(a, 10**4)) is None
    return _same(state_a, state_b, seen)


def _state(value: object) -> dict | None:
    """An object's attributes (its __dict__ and slots); None for one that has neither (a C object)."""
    state = dict(vars(value)) if hasattr(value, "__dict__") else {}
    for cls in type(value).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                state[slot] = getattr(value, slot)
    if not state and not hasattr(value, "__dict__") and not getattr(type(value), "__slots__", None):
        return None
    return state


def _match_all(left: list, right: list, seen: set) -> bool:
    unmatched = list(right)
    for x in left:
        match = next((i for i, y in enumerate(unmatched) if _same(x, y, seen)), None)
        if match is None:
            return False
        unmatched.pop(match)
    return True


def short(value: object, limit: int = SHORT) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<a {type(value).__name__} without a repr>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _same_exception(a: BaseException, b: BaseException) -> bool:
    """The same type and message; object addresses in messages (`<Node at 0x7f...>`) are not behaviour."""
    return type(a) is type(b) and _ADDRESS.sub("0x", message_of(a)) == _ADDRESS.sub("0x", message_of(b))


# --- versions of the module -----------------------------------------------------------------------------------


@dataclass
class Binding:
    """A name of the module or of one of its classes, bound to a version's object."""

    holder: object  # a module or a class
    name: str
    value: object  # _ABSENT: the name is deleted

    def apply(self) -> None:
        if self.value is _ABSENT:
            if self.name in vars(self.holder):
                delattr(self.holder, self.name)
        else:
            setattr(self.holder, self.name, self.value)


@dataclass
class Swap:
    """A version's code run by the tree's own function object. Every reference to it (a decorator's wrapper, a
    dispatch registry, another module's import) then runs that version, and no decorator runs twice: on
    networkx, exec'ing `is_reachable` again made `@_dispatchable` refuse a second function of that name."""

    function: types.FunctionType
    code: types.CodeType
    defaults: tuple | None
    kwdefaults: dict | None
    caches: tuple = ()  # cache_clear of the wrappers around it (lru_cache): their results are another version's

    def apply(self) -> None:
        if self.function.__code__ is not self.code:
            self.function.__code__ = self.code
            self.function.__defaults__, self.function.__kwdefaults__ = self.defaults, self.kwdefaults
            for clear in self.caches:
                clear()


@dataclass
class Version:
    """A text of the target's module as the changes that make the live one run it."""

    changes: list = field(default_factory=list)  # Binding and Swap

    def apply(self) -> None:
        for change in self.changes:
            change.apply()


def _definitions(tree: ast.Module) -> dict[tuple[str, ...], list[ast.stmt]]:
    """The module's definitions by what they bind: ("name",) at the top level, ("Class", "name") in a
    top-level class; a name defined twice (a property's getter and setter) keeps all its statements."""
    found: dict[tuple[str, ...], list[ast.stmt]] = {}
    for node in tree.body:
        for name in _bound(node):
            found.setdefault((name,), []).append(node)
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                for name in _bound(member):
                    found.setdefault((node.name, name), []).append(member)
    return found


def _bound(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"]
    return []


def _dump(nodes: Sequence[ast.AST]) -> str:
    return "\n".join(ast.dump(n) for n in nodes)


def _segment(lines: list[str], node: ast.stmt, decorated: bool = True) -> tuple[int, str]:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", []) if decorated])
    return first, "".join(lines[first - 1:node.end_lineno])


def changed_keys(text: str, base: str) -> list[tuple[str, ...]]:
    """What `text` defines differently from `base` (or anew). A class both define is compared member by member."""
    mine, theirs = _definitions(ast.parse(text)), _definitions(ast.parse(base))
    keys = []
    for key, nodes in mine.items():
        if key in theirs and _dump(nodes) == _dump(theirs[key]):
            continue
        if len(key) == 1 and isinstance(nodes[-1], ast.ClassDef) and key in theirs:
            continue  # compared by its members
        keys.append(key)
    return keys


def overlay(module: types.ModuleType, text: str, base: str, what: str) -> dict[tuple[str, ...], object]:
    """What `text` defines where it differs from `base` (the module's text), compiled against the live module's
    globals: a Swap for a function the tree defines with the same decorators, so that its own object runs the
    new code; else the new object, a method re-homed to the live class (super() and name mangling hold)."""
    filename = getattr(module, "__file__", None) or "<module>"
    lines = text.splitlines(keepends=True)
    definitions, bases = _definitions(ast.parse(text)), _definitions(ast.parse(base))
    objects: dict[tuple[str, ...], object] = {}
    try:
        for key in changed_keys(text, base):
            nodes = definitions[key]
            if len(key) == 2 and not isinstance(vars(module).get(key[0]), type):
                raise TargetError(f"{key[0]} is not a class of the live module")
            swap = _swap(module, key, nodes, bases.get(key), lines, filename)
            objects[key] = swap if swap is not None else _compiled(module, key, nodes, lines, filename)
    except TargetError:
        raise
    except Exception as exc:
        raise TargetError(f"{what} does not load beside the tree's module: {exception_text(exc)}") from None
    return objects


def _compiled(module: types.ModuleType, key: tuple[str, ...], nodes: list[ast.stmt], lines: list[str], filename: str,
              decorated: bool = True) -> object:
    """The object `nodes` bind, compiled at their line numbers against the module's globals."""
    scratch: dict = {}
    if len(key) == 1:
        for node in nodes:
            first, source = _segment(lines, node, decorated)
            exec(compile("\n" * (first - 1) + textwrap.dedent(source), filename, "exec"), module.__dict__, scratch)
        return scratch[key[0]]
    first = _segment(lines, nodes[0], decorated)[0]
    body = "".join(_segment(lines, n, decorated)[1] for n in nodes)
    source = "\n" * max(first - 2, 0) + f"class {key[0]}:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    exec(compile(source, filename, "exec"), module.__dict__, scratch)
    return _rehome(vars(scratch[key[0]])[key[1]], vars(module)[key[0]])


def _swap(module: types.ModuleType, key: tuple[str, ...], nodes: list[ast.stmt], base: list[ast.stmt] | None,
          lines: list[str], filename: str) -> Swap | None:
    """The new code for the tree's own function, when the tree defines it as one def with the same decorators
    and the same free variables; None otherwise."""
    if base is None or len(nodes) != 1 or len(base) != 1:
        return None
    node, original = nodes[0], base[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or \
            not isinstance(original, (ast.FunctionDef, ast.AsyncFunctionDef)) or \
            _dump(node.decorator_list) != _dump(original.decorator_list):
        return None
    raw = vars(module if len(key) == 1 else vars(module)[key[0]]).get(key[-1], _ABSENT)
    found = _innermost(raw, key[-1], module_file(module))
    if found is None:
        return None
    function, caches = found
    plain = _compiled(module, key, nodes, lines, filename, decorated=False)
    plain = plain.__func__ if isinstance(plain, (staticmethod, classmethod)) else plain
    if not isinstance(plain, types.FunctionType) or plain.__code__.co_freevars != function.__code__.co_freevars:
        return None
    return Swap(function, plain.__code__, plain.__defaults__, plain.__kwdefaults__, caches)


def _innermost(raw: object, name: str, path: Path | None) -> tuple[types.FunctionType, tuple] | None:
    """The function the module's def made, inside whatever decorators wrap it, and the caches on the way."""
    caches: list[Callable[[], None]] = []
    seen: set[int] = set()
    queue = [raw]
    while queue and len(seen) < 16:
        item = queue.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, types.FunctionType) and item.__code__.co_name == name and \
                Path(item.__code__.co_filename).resolve() == path:
            return item, tuple(caches)
        clear = getattr(item, "cache_clear", None)
        if callable(clear):
            caches.append(clear)
        queue += [getattr(item, attr, None) for attr in ("__func__", "fget", "__wrapped__", "orig_func", "func")]
    return None


def _rehome(raw: Any, cls: type) -> Any:  # whatever a class body holds
    """A method compiled in a stand-in class, its `__class__` cell (zero-argument super()) pointed at `cls`."""
    if isinstance(raw, (staticmethod, classmethod)):
        return type(raw)(_rehome(raw.__func__, cls))
    if isinstance(raw, property):
        fget, fset, fdel = (_rehome(f, cls) if f else None for f in (raw.fget, raw.fset, raw.fdel))
        return property(fget, fset, fdel, raw.__doc__)
    if isinstance(raw, types.FunctionType) and "__class__" in raw.__code__.co_freevars:
        cells = tuple(types.CellType(cls) if name == "__class__" else cell
                      for name, cell in zip(raw.__code__.co_freevars, raw.__closure__ or ()))
        function = types.FunctionType(raw.__code__, raw.__globals__, raw.__name__, raw.__defaults__, cells)
        function.__kwdefaults__, function.__qualname__ = raw.__kwdefaults__, raw.__qualname__
        function.__dict__.update(raw.__dict__)
        return function
    return raw


def holder_of(module: types.ModuleType, key: tuple[str, ...]) -> object:
    return module if len(key) == 1 else vars(module)[key[0]]


# --- finding the module ---------------------------------------------------------------------------------------


def module_file(module: object) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if isinstance(file, str) else None


def find_module(root: Path, file: str) -> types.ModuleType:
    """The module loaded from root/file: the one the tests imported if they did, else imported now by the
    name its path has under a sys.path entry."""
    path = (root / file).resolve()
    if not path.is_file():
        raise TargetError(f"{file} does not exist in {root}")
    for module in list(sys.modules.values()):
        if module_file(module) == path:
            return module
    names = []
    for entry in sys.path:
        base = Path(entry or ".").resolve()
        if path.is_relative_to(base):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts and parts[-1] == "__init__":
                parts.pop()
            if parts and all(part.isidentifier() for part in parts):
                names.append((len(parts), ".".join(parts)))
    if not names:
        raise TargetError(f"{file} is not importable from any sys.path entry")
    name = min(names)[1]
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise TargetError(f"could not import {name} from {file}: {exception_text(exc)}") from None


# --- the check ------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the check saw of one function."""

    calls: int = 0
    checked: int = 0
    uncopyable: int = 0
    too_big: int = 0
    unreproducible: int = 0
    first_problem: str = ""  # why a call could not be checked, the first time it happened
    every: int = 0  # check every this-many-th call (and each test's first); 0: the first MAX_SAMPLED, then a spread
    last_test: str | None = None  # the test that made the latest call


_CONTAINERS = (list, dict, set, bytearray, collections.deque)


def shared_objects(root: Path) -> dict[int, object]:
    """The project's module-level objects, by id: a copy of the arguments shares them rather than copying
    them, since code compares them by identity (a token type such as `T.Keyword`, a sentinel). Containers
    are state, and are copied."""
    shared: dict[int, object] = {}
    for module in list(sys.modules.values()):
        path = module_file(module)
        if path is not None and path.is_relative_to(root) and "site-packages" not in path.parts:
            for value in list(vars(module).values()):
                if not isinstance(value, _CONTAINERS):
                    shared[id(value)] = value
    return shared


_NOT_COPIED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
_address = object.__hash__  # an object's address, as id() is, but no audit event (see _too_big)


def _too_big(value: object, shared: frozenset[int]) -> bool:
    """Whether copying `value` means more than MAX_COPY_OBJECTS objects or MAX_COPY_MB: a bounded walk, level by
    level. `shared` holds the _address of each shared object. Behind the sandbox's wall, every id() call and every
    gc.get_referents call is an audit event, which runs Python code: an object at a time, the walk of a large
    parse tree cost more than its copy, and the check sampled too few calls to find a wrong one."""
    seen, level, size = set(shared), [value], 0
    while level:
        fresh = []
        for item in level:
            address = _address(item)
            if address in seen or isinstance(item, _NOT_COPIED):
                continue
            seen.add(address)
            fresh.append(item)
            size += sys.getsizeof(item, 0)
            if len(seen) - len(shared) > MAX_COPY_OBJECTS or size > MAX_COPY_MB << 20:
                return True
        level = gc.get_referents(*fresh) if fresh else []
    return False


def _is_iterator(value: object) -> TypeGuard[Iterator[Any]]:
    return isinstance(value, (types.GeneratorType, map, filter, zip, enumerate)) or (
        type(value).__module__ == "itertools" and hasattr(value, "__next__"))


@dataclass
class Outcome:
    """One run of one version on one set of arguments."""

    args: tuple
    kwargs: dict
    result: object = None
    raised: BaseException | None = None  # by the call, or while its iterator was read
    items: list | None = None  # a returned iterator's items, up to MAX_ITEMS + 1, when it returned one
    changed: frozenset = frozenset()  # the globals and class attributes the run changed

    @property
    def more(self) -> bool:
        return self.items is not None and len(self.items) > MAX_ITEMS

    def drain(self) -> None:
        """Read a returned iterator (a generator's items are its behaviour), up to one item past MAX_ITEMS."""
        if self.raised is not None or not _is_iterator(self.result):
            return
        self.items = []
        try:
            for item in itertools.islice(self.result, MAX_ITEMS + 1):
                self.items.append(item)
        except (MemoryError, KeyboardInterrupt):
            raise
        except (Exception, SystemExit) as exc:
            self.raised = exc

    def give(self):
        """What the caller gets: the result, or the iterator's items as it would have yielded them."""
        if self.items is not None:
            return _replay(self.items, self.raised, self.result if self.more else ())
        if self.raised is not None:
            raise self.raised
        return self.result


def _replay(items: list, raised: BaseException | None, rest):
    yield from items
    if raised is not None:
        raise raised
    yield from rest


def difference(original: Outcome, candidate: Outcome, method: bool) -> str | None:
    """How the candidate's run differs from the original's, in a few words; None when it does not."""
    if (original.items is None) != (candidate.items is None):
        return f"returned {short(candidate.result)} where the original returned {short(original.result)}"
    if original.items is not None and candidate.items is not None:  # both or neither, as checked above
        mine, theirs = candidate.items[:MAX_ITEMS], original.items[:MAX_ITEMS]
        if not same(mine, theirs) or original.more != candidate.more:
            return (f"yielded {short(mine)}{' and more' * candidate.more} where the original yielded "
                    f"{short(theirs)}{' and more' * original.more}")
    if original.raised is None and candidate.raised is not None:
        return f"raised {exception_text(candidate.raised)} where the original returned {short(original.result)}"
    if original.raised is not None and candidate.raised is None:
        return f"returned {short(candidate.result)} where the original raised {exception_text(original.raised)}"
    if original.raised is not None and candidate.raised is not None:
        if not _same_exception(original.raised, candidate.raised):
            return f"raised {exception_text(candidate.raised)} where the original raised {exception_text(original.raised)}"
    elif original.items is None and not same(candidate.result, original.result):
        return f"returned {short(candidate.result)} where the original returned {short(original.result)}"
    for position, (want, got) in enumerate(zip(original.args, candidate.args)):
        if not same(got, want):
            name = "self" if method and position == 0 else f"argument {position}"
            return f"left {name} as {short(got)} where the original left {short(want)}"
    for key, want in original.kwargs.items():
        if not same(candidate.kwargs.get(key), want):
            return f"left argument {key!r} as {short(candidate.kwargs.get(key))} where the original left {short(want)}"
    extra = sorted(candidate.changed - original.changed)
    if extra:
        return f"changed {extra[0]}, which the original leaves alone"
    return None


class Check:
    """The wrapped functions, the versions and what the check found."""

    def __init__(self, module: types.ModuleType, target: str, tree_text: str, original_text: str,
                 champion_text: str | None, root: Path | None = None, watch: tuple[str, ...] = ()):
        self.module = module
        self.shared = shared_objects(root) if root is not None else {}
        self.shared_addresses = frozenset(map(_address, self.shared.values()))
        # The memo each copy starts from: the shared objects under their id (for a __deepcopy__ that looks itself
        # up in the memo by id()) and under their _address (for the copy module: see pytest_configure).
        self.shared_memo = {**self.shared, **{_address(v): v for v in self.shared.values()}}
        self.budget_s = CHECK_BUDGET_S
        self.target_key = tuple(target.split("."))
        if len(self.target_key) > 2:
            raise TargetError(f"{target} is not a function or a method of a top-level class")
        originals = overlay(module, original_text, tree_text, "the original")
        champions = originals if champion_text in (None, original_text) else overlay(module, champion_text, tree_text, "the best version")
        watch_keys = {tuple(q.split(".")) for q in watch if len(q.split(".")) <= 2} | {self.target_key}
        self.keys = sorted(set(originals) | set(champions) | watch_keys)
        if len(self.target_key) == 2 and not isinstance(vars(module).get(self.target_key[0]), type):
            raise TargetError(f"{module.__name__} defines no class {self.target_key[0]}")
        self.tree = {key: vars(holder_of(module, key)).get(key[-1], _ABSENT) for key in self.keys}
        if self.tree[self.target_key] is _ABSENT:
            raise TargetError(f"{module.__name__} defines no {target}")
        self.aliases = self._aliases()
        # The tree's own code, to swap back to, for each function a version runs its code in.
        self.restore = {key: Swap(c.function, c.function.__code__, c.function.__defaults__, c.function.__kwdefaults__,
                                  c.caches) for changes in (champions, originals) for key, c in changes.items()
                        if isinstance(c, Swap)}
        self.original = self._version(originals)
        self.champion = self._version(champions)
        self.candidate = self._version({})
        # Wrapped: every function the candidate changed that the original has, and the target.
        watched = [key for key in self.keys if (key in originals or key in watch_keys) and self.tree[key] is not _ABSENT]
        self.tallies: dict[str, Tally] = {}
        self.mismatch: str | None = None
        self.spent_s = 0.0
        self.spent_in: dict[str | None, float] = {}  # by test: each spends its share of the budget
        self.tests = 1  # the tests the run covers, to share the budget among
        self.calls_in: dict[str | None, int] = {}  # by test: the calls of wrapped functions it made
        self.shares: dict[str | None, float] = {}  # by test: its part of the calls the original's run counted
        self.current: str | None = None  # the test running now
        self.callers: set[str | None] = set()  # the tests that called a wrapped function
        self._busy = threading.local()
        shims = {}
        for key in dict.fromkeys(watched):
            change = originals.get(key)
            original = self.tree[key] if change is None or isinstance(change, Swap) else change
            compare = change is not None and type(original) is type(self.tree[key])
            shim = self._shim(key, self.tree[key], original, compare)
            if shim is not None:
                shims[key] = shim
        self.checking = self._version(shims)

    def _aliases(self) -> dict[tuple[str, ...], list[tuple[object, str]]]:
        """Where other modules hold a top-level object under a name of their own (`from pkg.calc import total`)."""
        found: dict[tuple[str, ...], list[tuple[object, str]]] = {}
        for key in self.keys:
            value = self.tree[key]
            if len(key) != 1 or not callable(value):
                continue
            for other in list(sys.modules.values()):
                if isinstance(other, types.ModuleType) and other is not self.module:
                    for name, held in list(vars(other).items()):
                        if held is value:
                            found.setdefault(key, []).append((other, name))
        return found

    def _version(self, changes: dict) -> Version:
        """The tree with `changes` (key -> a Swap or an object to bind) over it: every key is bound, to the tree's
        object where the version has none of its own, and every swapped function runs the version's code."""
        version = Version()
        for key in self.keys:
            change = changes.get(key)
            value = self.tree[key] if change is None or isinstance(change, Swap) else change
            version.changes.append(Binding(holder_of(self.module, key), key[-1], value))
            version.changes += [Binding(other, name, value) for other, name in self.aliases.get(key, ())]
            swap = change if isinstance(change, Swap) else self.restore.get(key)
            if swap is not None:
                version.changes.append(swap)
        return version

    def _globals(self) -> dict[str, tuple]:
        """A cheap fingerprint of the module's data and the target class's: what each name holds, and the size
        of a builtin container (an append or a new key shows; a value changed in place does not)."""
        holders = [("", self.module)] + ([(self.target_key[0] + ".", holder_of(self.module, self.target_key))]
                                         if len(self.target_key) == 2 else [])
        prints = {}
        for prefix, holder in holders:
            for name, value in list(vars(holder).items()):
                if name.startswith("__") or callable(value) or isinstance(value, (types.ModuleType, property,
                                                                                  staticmethod, classmethod)):
                    continue
                size = len(value) if isinstance(value, (list, dict, set, bytearray)) else None
                prints[prefix + name] = (id(value), size)
        return prints

    def _shim(self, key: tuple[str, ...], raw: object, original_raw: Any, compare: bool):  # original_raw: of raw's kind
        """The candidate's `raw`, wrapped to count its calls and, with `compare`, to check them against
        `original_raw` (the same object when the original's code is swapped in); None for what is not called."""
        qualname = ".".join(key)
        tally = self.tallies.setdefault(qualname, Tally())
        method = len(key) == 2 and not isinstance(raw, staticmethod)
        if isinstance(raw, property):
            if raw.fget is None:
                return None
            fget = self._wrap(raw.fget, original_raw.fget if compare else raw.fget, compare, tally, qualname, True)
            return property(fget, raw.fset, raw.fdel, raw.__doc__)
        if isinstance(raw, (staticmethod, classmethod)):
            inner = original_raw.__func__ if compare else raw.__func__
            return type(raw)(self._wrap(raw.__func__, inner, compare, tally, qualname, method))
        if not callable(raw) or isinstance(raw, type):
            return None
        return self._wrap(raw, original_raw, compare, tally, qualname, method)

    def _sampled(self, tally: Tally, first_in_test: bool) -> bool:
        n = tally.calls
        if self.mismatch is not None or self.spent_s >= 2 * self.budget_s:
            return False
        if tally.every:
            # Each test's first call, then the spread within the test's share of the budget, which follows where
            # the calls are: a test whose calls carry a large parse tree (sqlparse's DoS tests) must not use up
            # what the others need, nor be left with a sliver when most calls, and the long lines, are its own.
            part = self.shares.get(self.current, 1 / self.tests) if self.shares else 1 / self.tests
            share = self.spent_in.get(self.current, 0.0) < self.budget_s * part
            return first_in_test or ((n - 1) % tally.every == 0 and share and self.spent_s < self.budget_s)
        return self.spent_s < self.budget_s and (n <= MAX_SAMPLED or n & (n - 1) == 0)

    def spend(self, seconds: float) -> None:
        self.spent_s += seconds
        self.spent_in[self.current] = self.spent_in.get(self.current, 0.0) + seconds

    def _copies(self, tally: Tally, args: tuple, kwargs: dict):
        """Two deep copies of the arguments taken before any run, or None (and why, tallied)."""
        try:
            if _too_big((args, kwargs), self.shared_addresses):
                tally.too_big += 1
                tally.first_problem = tally.first_problem or f"its arguments hold over {MAX_COPY_MB} MiB or " \
                                                             f"{MAX_COPY_OBJECTS} objects"
                return None
            first = copy.deepcopy((args, kwargs), dict(self.shared_memo))
            # The second copy, for the control, while the function has not shown it repeats itself.
            controlled = tally.checked + tally.unreproducible < CONTROLLED or tally.unreproducible
            return first, copy.deepcopy((args, kwargs), dict(self.shared_memo)) if controlled else None
        except RecursionError:
            reason = "its arguments nest deeper than deepcopy can follow"
        except Exception as exc:
            reason = f"its arguments cannot be deep-copied ({exception_text(exc)})"
        tally.uncopyable += 1
        tally.first_problem = tally.first_problem or reason
        return None

    def _settle(self, tally: Tally, qualname: str, method: bool, copies, expected: Outcome, got: Outcome,
                again: Outcome | None) -> None:
        """Tally one checked call: the same, a difference, or a call the original itself does not repeat."""
        found = difference(expected, got, method)
        if found is None:
            tally.checked += 1
        elif again is not None and difference(expected, again, method) is not None:
            tally.unreproducible += 1  # the original differs from itself: chance, the clock, a counter
        elif self.mismatch is None:
            args, kwargs = copies[1] or copies[0]  # the untouched copy, else the one the original ran on
            self.mismatch = f"call {tally.calls} of {qualname}, {_call_text(qualname, args, kwargs, method)}: {found}"

    def _as_original(self):
        """Run the original's code for a moment: its own calls to the functions it shares go to its versions."""
        check = self

        class _Original:
            def __enter__(self):
                check.original.apply()

            def __exit__(self, *exc_info):
                check.checking.apply()

        return _Original()

    def _wrap(self, candidate, original, compare: bool, tally: Tally, qualname: str, method: bool):
        check = self

        def begin(args, kwargs):
            """Whether this call is checked, and the copies of its arguments (None when they cannot be had)."""
            if getattr(check._busy, "active", False):
                return False, None  # a call made inside a checked one is part of its behaviour
            tally.calls += 1
            check.callers.add(check.current)
            check.calls_in[check.current] = check.calls_in.get(check.current, 0) + 1
            first_in_test, tally.last_test = tally.last_test != check.current, check.current
            if not compare or not check._sampled(tally, first_in_test):
                return False, None
            started = time.perf_counter()
            copies = check._copies(tally, args, kwargs)
            check.spend(time.perf_counter() - started)
            return True, copies

        def checked(*args, **kwargs):
            checking, copies = begin(args, kwargs)
            if not checking:
                return candidate(*args, **kwargs)
            check._busy.active = True
            try:
                started = time.perf_counter()
                if copies is not None:
                    with check._as_original():
                        expected = check._run(original, *copies[0])
                check.spend(time.perf_counter() - started)
                got = check._run(candidate, args, kwargs)
                started = time.perf_counter()
                if copies is not None:
                    again = None
                    if difference(expected, got, method) is not None and copies[1] is not None:
                        with check._as_original():
                            again = check._run(original, *copies[1])
                    check._settle(tally, qualname, method, copies, expected, got, again)
                check.spend(time.perf_counter() - started)
            finally:
                check._busy.active = False
            return got.give()

        async def checked_async(*args, **kwargs):
            checking, copies = begin(args, kwargs)
            if not checking:
                return await candidate(*args, **kwargs)
            check._busy.active = True
            try:
                if copies is not None:
                    with check._as_original():
                        expected = await check._run_async(original, *copies[0])
                got = await check._run_async(candidate, args, kwargs)
                if copies is not None:
                    again = None
                    if difference(expected, got, method) is not None and copies[1] is not None:
                        with check._as_original():
                            again = await check._run_async(original, *copies[1])
                    check._settle(tally, qualname, method, copies, expected, got, again)
            finally:
                check._busy.active = False
            return got.give()

        return _like(checked_async if inspect.iscoroutinefunction(candidate) else checked, candidate)

    def _run(self, function, args: tuple, kwargs: dict) -> Outcome:
        outcome = Outcome(args, kwargs)
        before = self._globals()
        try:
            outcome.result = function(*args, **kwargs)
        except (MemoryError, KeyboardInterrupt):
            raise
        except (Exception, SystemExit) as exc:
            outcome.raised = exc
        outcome.drain()
        outcome.changed = self._changes(before)
        return outcome

    async def _run_async(self, function, args: tuple, kwargs: dict) -> Outcome:
        outcome = Outcome(args, kwargs)
        before = self._globals()
        try:
            outcome.result = await function(*args, **kwargs)
        except (MemoryError, KeyboardInterrupt):
            raise
        except (Exception, SystemExit) as exc:
            outcome.raised = exc
        outcome.changed = self._changes(before)
        return outcome

    def _changes(self, before: dict) -> frozenset:
        after = self._globals()
        return frozenset(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _like(wrapper, wrapped):
    try:
        wrapper.__name__, wrapper.__qualname__ = wrapped.__name__, wrapped.__qualname__
        wrapper.__doc__, wrapper.__wrapped__ = wrapped.__doc__, wrapped
    except (AttributeError, TypeError):
        pass
    return wrapper


def _call_text(qualname: str, args: tuple, kwargs: dict, method: bool) -> str:
    shown = [short(arg) for arg in args[1 if method else 0:]] + [f"{key}={short(value)}" for key, value in kwargs.items()]
    text = f"{qualname}({', '.join(shown)})"
    return text if len(text) <= 2 * SHORT else text[:2 * SHORT - 4] + "...)"


# --- the plugin -----------------------------------------------------------------------------------------------


class Verifier:
    def __init__(self, config: pytest.Config, spec: dict):
        self.config, self.spec = config, spec
        self.check: Check | None = None
        self.error: str | None = None
        self.timing = False
        self.tracing = False
        self.call_s: dict[str, float] = {}  # the call phase's time of each test, in the current run
        self.peak: dict[str, int] = {}
        self.race: dict | None = None
        self.race_failed: str | None = None
        self.raced: list[str] = []  # the race's tests among those collected
        self.tests_s: float | None = None  # their call time in the check's run

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        root = Path(self.spec["root"])
        try:
            module = find_module(root, self.spec["file"])
            tree_text = (root / self.spec["file"]).read_text(encoding="utf-8")
            original = Path(self.spec["original"]).read_text(encoding="utf-8")
            champion = Path(self.spec["champion"]).read_text(encoding="utf-8") if self.spec.get("champion") else None
            self.check = Check(module, self.spec["qualname"], tree_text, original, champion, root.resolve(),
                               tuple(self.spec.get("watch") or ()))
            self.check.budget_s = float(self.spec.get("check_budget_s") or CHECK_BUDGET_S)
            self.check.tests = max(1, int(self.spec.get("tests_count") or 1))
            counted = self.spec.get("calls_by_test") or {}
            total = sum(counted.values())
            self.check.shares = {test: n / total for test, n in counted.items()} if total else {}
            for name, expected in (self.spec.get("expected_calls") or {}).items():
                if name in self.check.tallies and expected:
                    self.check.tallies[name].every = math.ceil(expected / MAX_SAMPLED)
        except TargetError as exc:
            self.error = str(exc)
            session.shouldstop = f"soap verify: {exc}"
            return
        self.check.checking.apply()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        if self.tracing:
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
        if self.check is not None:
            self.check.current = item.nodeid
        started = time.perf_counter()
        yield
        self.call_s[item.nodeid] = self.call_s.get(item.nodeid, 0.0) + time.perf_counter() - started
        if self.tracing:
            self.peak[item.nodeid] = max(self.peak.get(item.nodeid, 0), tracemalloc.get_traced_memory()[1] - start)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session):
        yield
        if self.check is None:
            return
        self.check.candidate.apply()
        race = set(self.spec.get("race") or self.check.callers)  # none named: the tests that call the target
        items = [i for i in session.items if i.nodeid in race]
        self.raced = sorted(i.nodeid for i in items)
        self.tests_s = sum(self.call_s.get(n, 0.0) for n in self.raced)
        if not items or session.testsfailed:
            return
        if self.spec.get("compete", True):
            if self.check.mismatch is None:
                self._race(items, self.check)
        elif self.spec.get("peak"):  # the original's first run: its peak, for round one
            self.race = {"peak_mb": {"challenger": self._peak(items, self.check.candidate)}}
            self.check.candidate.apply()

    def _race(self, items: list[pytest.Item], check: Check) -> None:
        from ..rerun import run_again

        versions = {"champion": check.champion, "challenger": check.candidate}
        times: dict[str, list[float]] = {"champion": [], "challenger": []}
        alpha = float(self.spec.get("alpha", 0.01))
        repeat = 1

        def sample(name: str) -> bool:
            versions[name].apply()
            gc.collect()
            self.call_s.clear()
            # After the last test comes the first again, so fixtures wider than a test stay up as between two
            # tests; a test followed by itself is torn down to its parent, as pytest's own reruns do.
            after = [following if following is not item else item.parent
                     for item, following in zip(items, [*items[1:], items[0]])]
            for _ in range(repeat):
                for item, following in zip(items, after):
                    if not run_again(item, following):
                        self.race_failed = f"{item.nodeid} failed when run again with the {name}"
                        return False
            times[name].append(sum(self.call_s.values()) / repeat)
            return True

        # A first run of each, untimed by the verdict, warms both and sizes the samples: the check's run of the
        # tests cannot, as the original's runs on copies of the arguments are in it.
        if not (sample("champion") and sample("challenger")):
            return self._end_race(check, times, repeat, 0, {})
        fastest = min(times["champion"].pop(), times["challenger"].pop())
        repeat = min(MAX_REPEAT, max(1, math.ceil(MIN_SAMPLE_S / fastest))) if fastest > 0 else MAX_REPEAT
        pairs = 0
        while pairs < MAX_PAIRS:
            order = ("champion", "challenger") if pairs % 2 == 0 else ("challenger", "champion")
            if not all(sample(name) for name in order):
                break
            pairs += 1
            if pairs >= MIN_PAIRS and min(mann_whitney_greater(times["champion"], times["challenger"]),
                                          mann_whitney_greater(times["challenger"], times["champion"])) <= alpha:
                break
        peaks = {}
        if self.race_failed is None:
            # The best's peak is known from the round that kept it (or the original's first run): a heap traced
            # under tracemalloc costs several runs' time, so each version's is taken once.
            known = self.spec.get("champion_peak_mb")
            peaks = {"champion": known if known is not None else self._peak(items, versions["champion"]),
                     "challenger": self._peak(items, versions["challenger"])}
        self._end_race(check, times, repeat, pairs, peaks)

    def _peak(self, items: list[pytest.Item], version: Version) -> float:
        """The largest heap growth (MiB, tracemalloc) in any one of the tests' calls, with `version` applied."""
        from ..rerun import run_each

        version.apply()
        self.peak.clear()
        gc.collect()
        tracemalloc.start()
        self.tracing = True
        try:
            run_each(items)
        finally:
            self.tracing = False
            tracemalloc.stop()
        return max(self.peak.values(), default=0) / 2**20

    def _end_race(self, check: Check, times: dict, repeat: int, pairs: int, peaks: dict) -> None:
        check.candidate.apply()
        self.race = {"time_s": times, "peak_mb": peaks, "repeat": repeat, "pairs": pairs}

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        check = self.check
        result: dict[str, Any] = {"error": self.error, "mismatch": None, "functions": {}, "race": None,
                                  "race_failed": self.race_failed,
                                  "tests_s": self.tests_s, "raced": self.raced}
        if check is not None:
            check.candidate.apply()
            result.update(mismatch=check.mismatch, race=self.race,
                          callers=sorted(c for c in check.callers if c),
                          calls_by_test={t: n for t, n in check.calls_in.items() if t},
                          functions={name: vars(t) for name, t in check.tallies.items()})
        Path(self.spec["out"]).write_text(json.dumps(result), encoding="utf-8")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("soap-verify", "pytest-soap: check a candidate and race it").addoption(
        "--soap-verify", metavar="SPEC.json", help="what to check and race, and where to write the result")


def pytest_configure(config: pytest.Config) -> None:
    spec = config.getoption("soap_verify")
    if spec:
        # Behind the sandbox's wall every id() call is an audit event that runs Python code, and deepcopy makes
        # two a copied object: copies of a parse tree took twice as long, and the check sampled too few calls to
        # find a wrong one. The copy module keys its memo by the object's address through _address instead (the
        # same bijection of the address id() gives, with no event); the shared objects are in the memo under both.
        copy.id = _address  # type: ignore[attr-defined]  # a global of the copy module's, not an attribute it declares
        config.pluginmanager.register(Verifier(config, json.loads(Path(spec).read_text(encoding="utf-8"))), "soap-verify")
