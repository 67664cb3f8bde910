"""What the model is asked: a fixed part (instructions, the regression's code, the tests), cached across
rounds, and a part that changes (the best code so far, its overhead profile, why earlier candidates failed).

The fixed part gives the regression as a unit, within BUDGET characters: the target whole; the other
functions on the regressed path (Target.related) whole when they hold RELATED_SOURCE of it or more, else
their signature and first docstring line, those of the target's module marked as revisable; for a method, its
class's header, the class attributes the code shown uses and the other methods it calls; and, from the line
profile, the module's functions and the class's methods used on the target's hottest lines, whole. Over the
budget, the least important sources shrink to signatures, the lightest first. The same inputs always give
the same text.
"""

from __future__ import annotations

import ast
import io
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .candidate import CandidateError, enclosing, function_spans, locate

SYSTEM = """\
You optimise the code behind a performance regression for execution time and memory, as the overhead
profile shows them: one target function, and with it the functions of its module that the context marks
"you may revise it".
Each revision must behave identically: the same return values, the same exceptions, the same changes to
its arguments, for every input, not only the tests' inputs. Keep each revised function's name, signature and
decorators. Do not add I/O, and do not import os, subprocess, socket, shutil, ctypes or importlib, or call
open, exec, eval, compile or __import__, unless the original does.
Reply with one fenced ```python block holding the complete revised target and any of the revisable
functions you change (a method inside `class Name:` with just the methods you revise); leave out what you
do not change. New helper functions, methods and imports may stand in the same block under new names; do
not redefine anything else of the module. Say in a sentence or two, outside the block, what you changed
and why."""

BUDGET = 24_000  # characters of the fixed part: about 6k tokens, sent every round
RELATED_SOURCE = 0.03  # a related function holding this part of the regression is shown whole
HOT_LINE = 0.10  # a line holding this part of the target's time: what it calls in the module is shown whole
# A class used by the code shown is shown whole when shorter than this many lines (a NamedTuple's fields).
SHORT_CLASS = 20
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


@dataclass
class Rejected:
    """An earlier candidate that was not kept, and why: the model is told, so it does not try it again."""

    iteration: int
    reason: str


@dataclass
class _Shown:
    """A function of the regression besides the target, as the context shows it."""

    file: str
    qualname: str
    weight: float  # the part it holds, of the regression or of the target's time: the lightest shrinks first
    note: str  # why it is shown, written above it
    whole: bool  # its source; else its signature and first docstring line
    revisable: bool


class _Source:
    """A module parsed once: its tree, its lines, and where the definitions the loop can reach are (found by
    candidate's rules, so the target shown is the very span a revision replaces)."""

    def __init__(self, text: str):
        self.text, self.tree = text, ast.parse(text)
        self.lines = [line.rstrip("\r\n") for line in io.StringIO(text, newline="").readlines()]  # Python's breaks
        starts = {_first_line(n): n for n in ast.walk(self.tree) if isinstance(n, FUNCTIONS)}
        self.spans = function_spans(text, _reachable(self.tree))
        self.nodes = {q: starts[first] for q, (first, _) in self.spans.items() if first in starts}

    def whole(self, qualname: str, note: str | None = None) -> str:
        first, last = self.spans[qualname]
        return _noted(self.nodes[qualname], "\n".join(self.lines[first - 1:last]), note)

    def segment(self, node: ast.stmt) -> str:
        return "\n".join(self.lines[node.lineno - 1:node.end_lineno])

    def context(self, qualname: str, whole: set[str], notes: dict[str, str]) -> str:
        """The module as far as the code shown whole needs it: imports, the module-level names it uses
        (constants in full, functions and classes as outlines), the functions in `whole` and the target,
        which comes last (a method in its class, with the class attributes and methods the code uses)."""
        target = self.nodes[qualname]
        code = [target, *(self.nodes[q] for q in sorted(whole) if q in self.nodes)]
        used = {n.id for c in code for n in ast.walk(c) if isinstance(n, ast.Name)} | {
            n.attr for c in code for n in ast.walk(c) if isinstance(n, ast.Attribute)}
        parts, last = [], None
        for node in self.tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                parts.append(self.segment(node))
            elif isinstance(node, FUNCTIONS) and node is not target:
                if node.name in whole and self.nodes.get(node.name) is node:
                    parts.append("\n" + self.whole(node.name, notes.get(node.name)))
                elif node.name in notes or node.name in used:
                    parts.append("\n" + _noted(node, _outline(node, self.lines), notes.get(node.name)))
            elif isinstance(node, ast.ClassDef):
                block = self._class(node, code, whole, notes, used)
                if target in node.body:
                    last = block
                elif block:
                    parts.append("\n" + block)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and used & _assigned(node):
                parts.append(self.segment(node))
        if last is None:
            last = self.whole(qualname, notes.get(qualname))
        return "\n".join(parts) + "\n\n" + last

    def _class(self, cls: ast.ClassDef, code: list, whole: set[str], notes: dict[str, str], used: set[str]) -> str:
        """A class that holds code shown whole or noted members: its header, then the class attributes and the
        methods that code reaches through self, cls or the class's name; else its outline if it is used."""
        inside = [c for c in code if c in cls.body]
        noted = [m for m in cls.body if isinstance(m, FUNCTIONS) and f"{cls.name}.{m.name}" in notes]
        if not inside and not noted:
            return _outline(cls, self.lines) if cls.name in used else ""
        reached = {n.attr for c in inside for n in ast.walk(c) if isinstance(n, ast.Attribute)
                   and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls", cls.name)}
        out = [_header(cls, self.lines)]
        for member in cls.body:
            if isinstance(member, (ast.Assign, ast.AnnAssign)) and reached & _assigned(member):
                out.append(self.segment(member))
            if not isinstance(member, FUNCTIONS):
                continue
            qualname = f"{cls.name}.{member.name}"
            if self.nodes.get(qualname) is member and member in inside:
                out.append("\n" + self.whole(qualname, notes.get(qualname)))
            elif member in noted or member.name in reached:
                out.append("\n" + _noted(member, _outline(member, self.lines), notes.get(qualname)))
        return "\n".join(out)

    def hot_callees(self, qualname: str, profile) -> dict[str, float]:
        """The module's functions and the target's class's methods used on the lines that hold HOT_LINE or more
        of the target's time, with the largest such line's share."""
        if profile is None or profile.qualname != qualname:
            return {}
        hot = {line.lineno: line.share for line in profile.lines if line.share >= HOT_LINE}
        target = self.nodes[qualname]
        owner = next((c for c in self.tree.body if isinstance(c, ast.ClassDef) and target in c.body), None)
        functions = {n.name for n in self.tree.body if isinstance(n, FUNCTIONS)}
        methods = {n.name for n in owner.body if isinstance(n, FUNCTIONS)} if owner else set()
        owner_name = owner.name if owner else ""  # unused without an owner: it has no methods
        found: dict[str, float] = {}
        for node in ast.walk(target):
            if isinstance(node, ast.Name) and node.id in functions:
                callee = node.id
            elif (isinstance(node, ast.Attribute) and node.attr in methods and isinstance(node.value, ast.Name)
                  and node.value.id in ("self", "cls", owner_name)):
                callee = f"{owner_name}.{node.attr}"
            else:
                continue
            end = node.end_lineno or node.lineno  # always set by ast.parse
            share = max((hot.get(n, 0.0) for n in range(node.lineno, end + 1)), default=0.0)
            if share and callee != qualname:
                found[callee] = max(found.get(callee, 0.0), share)
        return found


def module_context(module_source: str, qualname: str) -> str:
    """What the target needs from its module, and no more: the imports, the module-level names it uses
    (constants in full, functions and classes as their signatures and first docstring line), then the
    target itself (a method in its class, with the class attributes it uses and the methods it calls)."""
    return _Source(module_source).context(qualname, set(), {})


def _shown(file: str, qualname: str, source: _Source, related, profile) -> list[_Shown]:
    """The rest of the regression, heaviest first: the related functions, and the callees on hot lines."""
    parts: dict[tuple[str, str], list] = {}  # (file, qualname) -> [share, changed]; nested ones as their encloser
    for r in related:
        key = (r.file, enclosing(r.qualname))
        if key != (file, qualname) and r.file.endswith(".py"):
            part = parts.setdefault(key, [0.0, False])
            part[0], part[1] = max(part[0], r.share), part[1] or r.changed
    shown = {}
    for (where, name), (share, changed) in parts.items():
        note = f"{share:.0%} of the regression" if share else "on the regressed path"
        note += " (changed)" if changed else ""
        mine = where == file
        shown[where, name] = _Shown(where, name, share, note + ("; you may revise it" if mine else ""),
                                    share >= RELATED_SOURCE, mine)
    for name, share in source.hot_callees(qualname, profile).items():
        hot = f"{share:.0%} of the target's time is on lines that use it"
        s = shown.setdefault((file, name), _Shown(file, name, 0.0, "", True, False))
        s.weight, s.whole = max(s.weight, share), True
        s.note = f"{s.note}; {hot}" if s.note else f"{hot}; shown for reference, not to be revised"
    return sorted(shown.values(), key=lambda s: (-s.weight, s.file, s.qualname))


def _elsewhere(shown: list[_Shown], sources: dict[str, _Source | None]) -> str:
    """The related functions of other modules, for reference: the reply cannot change them."""
    blocks = []
    for s in shown:
        source = sources.get(s.file)
        head = f"# {s.file}::{s.qualname}: {s.note}"
        if source is None or s.qualname not in source.nodes:
            blocks.append(f"{head} (its source is not available)")
        else:
            node = source.nodes[s.qualname]
            text = source.whole(s.qualname) if s.whole else _outline(node, source.lines)
            blocks.append(f"{head}\n{textwrap.dedent(text)}")
    return "\n\n".join(blocks)


def _read(root: Path | None, file: str) -> _Source | None:
    try:
        return _Source((root / file).read_text(encoding="utf-8")) if root else None
    except (OSError, ValueError, SyntaxError, CandidateError):  # gone, not UTF-8, not parsable: left out
        return None


def build(file: str, qualname: str, module_source: str, tests: list[str], original_profile: str,
          evidence: str, best_code: str | None, best_profile: str | None,
          rejected: list[Rejected], task: str = "", *, related=(), root: Path | None = None,
          profile=None) -> tuple[str, str]:
    """The fixed context (cached by the API from round two on) and this round's request. An empty profile
    is left out (the ablation that shows the model none). `related` is Target.related, read from `root`
    when in other files; `profile` is the original's OverheadProfile (its line numbers are module_source's)."""
    source = _Source(module_source)
    if qualname not in source.nodes:
        locate(module_source, qualname)  # raises CandidateError, saying why
    shown = _shown(file, qualname, source, related, profile)
    mine = [s for s in shown if s.file == file]
    others = [s for s in shown if s.file != file]
    sources = {f: _read(root, f) for f in dict.fromkeys(s.file for s in others)}
    while True:
        notes = {s.qualname: s.note for s in mine if s.qualname in source.nodes}
        if any(s.whole for s in mine):
            notes[qualname] = "the target"
        context = source.context(qualname, {s.qualname for s in mine if s.whole}, notes)
        elsewhere = _elsewhere(others, sources)
        fixed = ((f"{task}\n\n" if task else "") +
                 f"The target is `{qualname}` in `{file}`. Its module, as far as the regression needs it:\n\n"
                 f"```python\n{context}\n```\n\n" +
                 (f"Other functions on the regressed path, in other modules (for reference: the reply cannot "
                  f"change them):\n\n```python\n{elsewhere}\n```\n\n" if elsewhere else "") +
                 f"These tests exercise it, and must still pass: {', '.join(tests) or '(none named)'}.\n\n"
                 f"What the gate measured: {evidence}" +
                 (f"\n\nOverhead profile of the original, while its tests ran:\n\n```\n{original_profile}\n```"
                  if original_profile else ""))
        heavy = [s for s in shown if s.whole]
        if len(fixed) <= BUDGET or not heavy:
            break
        heavy[-1].whole = False  # the lightest source shrinks to its signature
    revisable = [s.qualname for s in mine if s.revisable and s.qualname in source.nodes]
    also = f" You may revise {', '.join(revisable)} with it, in the same block." if revisable else ""
    if best_code is None:
        request = "Revise the target to cost less time and memory, with identical behaviour." + also
    else:
        request = (f"The best revision so far, which is kept:\n\n```python\n{best_code}\n```\n\n" +
                   (f"Its overhead profile:\n\n```\n{best_profile or '(not profiled)'}\n```\n\n"
                    if original_profile else "") +
                   "Improve on it, with identical behaviour." + also)
    if rejected:
        request += "\n\nEarlier candidates that were not kept, and why:\n" + "\n".join(
            f"- round {r.iteration}: {r.reason}" for r in rejected)
    return fixed, request


def _reachable(tree: ast.Module) -> list[str]:
    """The module's functions and its classes' methods, in the order they are written."""
    names = []
    for c in tree.body:
        if isinstance(c, FUNCTIONS):
            names.append(c.name)
        elif isinstance(c, ast.ClassDef):
            names += [f"{c.name}.{m.name}" for m in c.body if isinstance(m, FUNCTIONS)]
    return names


def _first_line(node: ast.stmt) -> int:
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def _noted(node: ast.stmt, text: str, note: str | None) -> str:
    """The text with its note as a comment line above it, at its indentation."""
    return f"{' ' * node.col_offset}# {note}\n{text}" if note else text


def _header(node: Def, lines: list[str]) -> str:
    """A function's or class's decorators and header lines, and the first line of its docstring."""
    end = max(node.body[0].lineno - 1, node.lineno)  # a one-line def is its own header
    header = "\n".join(lines[_first_line(node) - 1:end]).rstrip()
    doc = ast.get_docstring(node)
    indent = " " * (node.col_offset + 4)
    return header + (f'\n{indent}"""{doc.splitlines()[0]}"""' if doc else "")


def _outline(node: Def, lines: list[str]) -> str:
    """A function's or class's header lines and the first line of its docstring: what calling it needs."""
    indent = " " * (node.col_offset + 4)
    if isinstance(node, ast.ClassDef) and (node.end_lineno or node.lineno) - _first_line(node) < SHORT_CLASS:
        return "\n".join(lines[_first_line(node) - 1:node.end_lineno])  # its fields matter, and it is short
    if isinstance(node, ast.ClassDef):
        methods = [m for m in node.body if isinstance(m, FUNCTIONS)]
        return "\n".join([_header(node, lines), *(_outline(m, lines) for m in methods)] if methods else
                         [_header(node, lines), f"{indent}..."])
    return f"{_header(node, lines)}\n{indent}..."


def _assigned(node: ast.Assign | ast.AnnAssign) -> set[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
