"""The Python functions that changed between a commit and the working tree: what a regression can be pinned on."""

from __future__ import annotations

import ast
import copy
import importlib.util
import re
from dataclasses import dataclass, replace
from pathlib import Path

# A hunk header of a -U0 patch; a missing count means one line.
_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.MULTILINE)


@dataclass(frozen=True)
class Definition:
    qualname: str  # as Python's __qualname__: "func", "Class.method", "outer.<locals>.inner"
    first_lineno: int  # the first decorator's line, else the def line: what the code object's co_firstlineno is
    lineno: int  # the `def` line
    end_lineno: int
    fingerprint: str  # the def's AST without docstrings and nested defs' bodies: equal means no change to it


def _drop_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
    if ast.get_docstring(node, clean=False) is not None:
        del node.body[0]


class _Strip(ast.NodeTransformer):
    """Takes out of one def what is not its own code: its docstring and the insides of the defs nested in it."""

    def __init__(self, top: ast.AST):
        self.top = top

    def visit_FunctionDef(self, node):
        if node is not self.top:
            return ast.Name(id=node.name)  # a nested def is a Definition of its own, with its own fingerprint
        _drop_docstring(node)
        return self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        # A class inside a function keeps its statements: they run each time the function does.
        _drop_docstring(node)
        return self.generic_visit(node)


def _fingerprint(node: ast.AST) -> str:
    mine = copy.deepcopy(node)  # the original keeps its nested defs for their own fingerprints
    return ast.dump(_Strip(mine).visit(mine))  # no line numbers in a dump: moving code is not changing it


class _Collector(ast.NodeVisitor):
    def __init__(self) -> None:
        self.prefix = ""
        self.found: list[Definition] = []

    def visit_FunctionDef(self, node):
        qualname = self.prefix + node.name
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        self.found.append(Definition(qualname, first, node.lineno, node.end_lineno, _fingerprint(node)))
        self._inside(node, qualname + ".<locals>.")

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self._inside(node, self.prefix + node.name + ".")

    def _inside(self, node, prefix):
        outer, self.prefix = self.prefix, prefix
        self.generic_visit(node)
        self.prefix = outer


def _parse(source: str) -> list[Definition] | None:
    """The definitions, or None when the source does not parse (so a caller can tell it from a file with none)."""
    try:
        collector = _Collector()
        collector.visit(ast.parse(source))
    except (SyntaxError, ValueError, RecursionError):  # ValueError: null bytes, before Python 3.12
        return None
    return collector.found


def definitions(source: str) -> list[Definition]:
    """Every function and method (sync and async, nested, decorated) in a module's source; [] on a SyntaxError."""
    return _parse(source) or []


def qualname_at(defs: list[Definition], line: int) -> str | None:
    """The innermost definition whose first_lineno..end_lineno holds `line`, or exactly starts at it."""
    holding = [d for d in defs if d.first_lineno <= line <= d.end_lineno]
    if not holding:
        return None
    # Nested ranges: the one starting last is the innermost.
    return max(holding, key=lambda d: (d.first_lineno, -d.end_lineno)).qualname


@dataclass(frozen=True)
class FunctionChange:
    file: str  # relative to the repository root, posix, as in the working tree (for deleted: as at the ref)
    qualname: str
    lineno: int  # the def line in the working tree (at the ref for deleted)
    kind: str  # "added" | "modified" | "deleted"


@dataclass
class ChangeSet:
    ref: str | None  # the commit sha compared against, None when unknown
    functions: list[FunctionChange]
    other_files: list[str]  # changed files not analysed: not Python source, binary, unreadable or not parsing
    note: str | None = None  # one line for the user when changes could not be listed

    def changed(self, file: str, qualname: str) -> bool:
        """Whether this function is added or modified in the working tree."""
        return any(f.file == file and f.qualname == qualname and f.kind != "deleted" for f in self.functions)

    def describe(self) -> str:
        if self.note:
            return self.note
        count = len(self.functions)
        since = f"since {self.ref[:7]}" if self.ref else "since an unknown commit"
        line = f"{count or 'no'} function{'' if count == 1 else 's'} changed {since}"
        if self.other_files:
            n = len(self.other_files)
            line += f" ({n} other file{'' if n == 1 else 's'} not analysed)"
        return line


def _hunks(patch: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The (start, count) line ranges a patch changes, on the ref's side and on the working tree's."""
    old, new = [], []
    for a, b, c, d in _HUNK.findall(patch):
        old.append((int(a), 1 if b == b"" else int(b)))
        new.append((int(c), 1 if d == b"" else int(d)))
    return old, new


def _touched(defs: list[Definition], ranges: list[tuple[int, int]]) -> set[str]:
    """The defs a range of lines falls in. A range of 0 lines is a cut after `start`: the defs around it count.
    Loose on purpose: every candidate is confirmed by its fingerprint."""
    names: set[str] = set()
    for start, count in ranges:
        low, high = (start, start + count - 1) if count else (start, start + 1)
        names.update(d.qualname for d in defs if d.first_lineno <= high and low <= d.end_lineno)
    return names


def _by_qualname(defs: list[Definition]) -> dict[str, list[Definition]]:
    grouped: dict[str, list[Definition]] = {}
    for d in defs:
        grouped.setdefault(d.qualname, []).append(d)
    return grouped


def _compare(file_old, file_new, old_defs, new_defs, patch):
    """(change, fingerprint) for each function of one file that differs between the ref and the working tree."""
    old_by, new_by = _by_qualname(old_defs), _by_qualname(new_defs)
    old_ranges, new_ranges = _hunks(patch or b"")
    # A renamed class renames its methods without touching their lines: names on one side only count too.
    candidates = _touched(old_defs, old_ranges) | _touched(new_defs, new_ranges) | (old_by.keys() ^ new_by.keys())
    for qualname in sorted(candidates):
        olds, news = old_by.get(qualname, []), new_by.get(qualname, [])
        if not olds:
            yield FunctionChange(file_new, qualname, news[0].lineno, "added"), news[0].fingerprint
        elif not news:
            yield FunctionChange(file_old, qualname, olds[0].lineno, "deleted"), olds[0].fingerprint
        elif sorted(d.fingerprint for d in olds) != sorted(d.fingerprint for d in news):
            # The same qualname can be defined twice (a property's getter and setter): point at the one that changed.
            known = {d.fingerprint for d in olds}
            fresh = [d for d in news if d.fingerprint not in known] or news
            yield FunctionChange(file_new, qualname, fresh[0].lineno, "modified"), fresh[0].fingerprint


def _settle_moves(found):
    """A function deleted in one file and added in another under the same qualname was moved: unchanged, it is
    no change at all; edited, it is modified where it now lives."""
    added = [x for x in found if x[0].kind == "added"]
    deleted = [x for x in found if x[0].kind == "deleted"]
    kept = [x[0] for x in found if x[0].kind == "modified"]
    for exact in (True, False):  # exact moves first, so an edited copy cannot take an unchanged one's match
        for new in list(added):
            old = next((x for x in deleted if x[0].qualname == new[0].qualname and (x[1] == new[1] or not exact)),
                       None)
            if old is not None:
                added.remove(new)
                deleted.remove(old)
                if old[1] != new[1]:
                    kept.append(replace(new[0], kind="modified"))
    return kept + [x[0] for x in added + deleted]


def _read_defs(read) -> list[Definition] | None:
    """The definitions in the source that `read()` returns, None when it cannot be read, decoded or parsed."""
    try:
        source = importlib.util.decode_source(read())  # honours a coding cookie, as the interpreter does
    except (OSError, KeyError, ValueError, SyntaxError, LookupError):
        return None
    return _parse(source)


def _changes(repo, commit) -> ChangeSet:
    root = Path(repo.working_tree_dir)
    # None compares with the working tree (the default is the index). The prefixes are explicit because
    # GitPython finds no diff at all under a user's `diff.noprefix = true`.
    diffs = commit.diff(None, create_patch=True, unified=0, M=True, src_prefix="a/", dst_prefix="b/")
    entries = [(d.a_path, d.b_path, d.diff) for d in diffs]
    entries += [(None, path, None) for path in repo.untracked_files]
    found, other = [], set()
    for old_path, new_path, patch in entries:
        shown = new_path or old_path
        if not all(p.endswith(".py") for p in (old_path, new_path) if p) or (patch or b"").startswith(b"Binary"):
            other.add(shown)
            continue
        # B023 is a false alarm here: _read_defs calls each lambda at once, within this turn
        old_defs = _read_defs(lambda: (commit.tree / old_path).data_stream.read()) if old_path else []  # noqa: B023
        new_defs = _read_defs(lambda: (root / new_path).read_bytes()) if new_path else []  # noqa: B023
        if old_defs is None or new_defs is None:
            other.add(shown)  # one side does not parse: its functions cannot be told apart
            continue
        found.extend(_compare(old_path, new_path, old_defs, new_defs, patch))
    functions = sorted(_settle_moves(found), key=lambda f: (f.file, f.lineno, f.qualname))
    return ChangeSet(commit.hexsha, functions, sorted(other))


def changed_functions(path: Path, ref: str) -> ChangeSet:
    """The functions changed between commit `ref` and the working tree of the repository holding `path`.
    Never raises for a bad repository or ref: the ChangeSet's note says why nothing is listed."""
    try:
        import git  # here, not at the top: most runs never attribute
    except ImportError:  # GitPython refuses to import without a git binary
        return ChangeSet(None, [], [], note="git is not available: changed functions are unknown")
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except Exception:
        return ChangeSet(None, [], [], note="not a git repository: changed functions are unknown")
    with repo:  # closing ends the `git cat-file` processes GitPython keeps running for object reads
        if repo.bare:
            return ChangeSet(None, [], [], note="a bare repository has no working tree: changed functions are unknown")
        try:
            commit = repo.commit(ref)
            commit.tree  # noqa: B018 - loads the object: GitPython takes the null sha on trust without looking it up
        except Exception:
            return ChangeSet(None, [], [], note=f"unknown commit {ref!r}: changed functions are unknown")
        try:
            return _changes(repo, commit)
        except Exception as exc:  # git failing part-way (a lock, a killed process): the run goes on without a list
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return ChangeSet(commit.hexsha, [], [], note=f"changes since {commit.hexsha[:7]} unknown: {reason}")
