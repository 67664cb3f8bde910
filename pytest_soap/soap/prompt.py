"""What the model is asked: a fixed part (instructions, the module context, the tests), cached across
rounds, and a part that changes (the best code so far, its overhead profile, why earlier candidates failed)."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from .candidate import function_source

SYSTEM = """\
You optimise one Python function for execution time and memory, as the overhead profile shows them.
The revision must behave identically: the same return values, the same exceptions, the same changes to
its arguments, for every input, not only the tests' inputs. Keep its name, its signature and its
decorators. Do not add I/O, and do not import os, subprocess, socket, shutil, ctypes or importlib, or call
open, exec, eval, compile or __import__, unless the original does.
Reply with the complete revised function in one fenced ```python block. New helper functions or imports
it needs may stand in the same block. Say in a sentence or two, outside the block, what you changed and why."""


# A class used by the target is shown whole when shorter than this many lines (a NamedTuple's fields).
SHORT_CLASS = 20


@dataclass
class Rejected:
    """An earlier candidate that was not kept, and why: the model is told, so it does not try it again."""

    iteration: int
    reason: str


def module_context(module_source: str, qualname: str) -> str:
    """What the target needs from its module, and no more: the imports, the module-level names it uses
    (constants in full, functions and classes as their signatures and first docstring line), then the
    target itself."""
    tree = ast.parse(module_source)
    lines = module_source.splitlines()
    target = _find(tree, qualname)
    used = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(target) if isinstance(n, ast.Attribute)}
    parts = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            parts.append(ast.get_source_segment(module_source, node))
        elif node is target or (isinstance(node, ast.ClassDef) and node.name == qualname.split(".")[0] and "." in qualname):
            continue
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in used:
            parts.append(_outline(node, lines))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and used & _assigned(node):
            parts.append(ast.get_source_segment(module_source, node))
    if "." in qualname:
        cls = _find(tree, qualname.split(".")[0])
        parts.append(lines[cls.lineno - 1] + "  # the target's class; its other methods are left out")
    body = function_source(module_source, qualname)[0]  # the very span a revision replaces
    return "\n".join(p for p in parts if p) + "\n\n" + body.rstrip("\n")


def build(file: str, qualname: str, module_source: str, tests: list[str], original_profile: str,
          evidence: str, best_code: str | None, best_profile: str | None,
          rejected: list[Rejected], task: str = "") -> tuple[str, str]:
    """The fixed context (cached by the API from round two on) and this round's request. An empty profile
    is left out (the ablation that shows the model none)."""
    fixed = ((f"{task}\n\n" if task else "") +
             f"The target is `{qualname}` in `{file}`. Its module, as far as the target needs it:\n\n"
             f"```python\n{module_context(module_source, qualname)}\n```\n\n"
             f"These tests exercise it, and must still pass: {', '.join(tests) or '(none named)'}.\n\n"
             f"What the gate measured: {evidence}" +
             (f"\n\nOverhead profile of the original, while its tests ran:\n\n```\n{original_profile}\n```"
              if original_profile else ""))
    if best_code is None:
        request = "Revise the target to cost less time and memory, with identical behaviour."
    else:
        request = (f"The best revision so far, which is kept:\n\n```python\n{best_code}\n```\n\n" +
                   (f"Its overhead profile:\n\n```\n{best_profile or '(not profiled)'}\n```\n\n"
                    if original_profile else "") +
                   "Improve on it, with identical behaviour.")
    if rejected:
        request += "\n\nEarlier candidates that were not kept, and why:\n" + "\n".join(
            f"- round {r.iteration}: {r.reason}" for r in rejected)
    return fixed, request


def _find(tree: ast.Module, qualname: str) -> ast.AST:
    scope: list[ast.stmt] = tree.body
    node = None
    for name in qualname.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == name), None)
        if node is None:
            raise ValueError(f"{qualname} is not defined in the module")
        scope = node.body
    return node


def _first_line(node: ast.AST) -> int:
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def _outline(node: ast.AST, lines: list[str]) -> str:
    """A function's or class's header lines and the first line of its docstring: what calling it needs."""
    header = "\n".join(lines[_first_line(node) - 1:node.body[0].lineno - 1]).rstrip()
    doc = ast.get_docstring(node)
    indent = " " * (node.col_offset + 4)
    summary = f'{indent}"""{doc.splitlines()[0]}"""\n' if doc else ""
    if isinstance(node, ast.ClassDef) and node.end_lineno - _first_line(node) < SHORT_CLASS:
        return "\n".join(lines[_first_line(node) - 1:node.end_lineno])  # its fields matter, and it is short
    if isinstance(node, ast.ClassDef):
        methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
        return header + "\n" + summary + "\n".join(_outline(m, lines) for m in methods) if methods else header + "\n" + summary + f"{indent}..."
    return f"{header}\n{summary}{indent}..."


def _assigned(node: ast.Assign | ast.AnnAssign) -> set[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
