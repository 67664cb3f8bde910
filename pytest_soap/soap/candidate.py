"""A model's reply turned into a new text of the target's module, or refused with a one-line reason.

The reply carries the revised function in one ```python block, perhaps with helpers and imports beside it.
What enters the module:
- the target's new definition, under the original's decorators (the reply cannot drop, change or add any:
  a decorator changes what callers get, and the behaviour check would not see that), with the parameters
  it had (names, kinds, order, which have defaults);
- the reply's other top-level definitions (defs, classes, `NAME = value`): one with the name of a module
  definition replaces it where it stands, unless it is the same code; a new one goes just before the
  target's statement. For a method, the reply's class may bring methods the same way, within the class;
- its top-level imports the module lacks, after the module's last top-level import (`from __future__`
  ones are left out: they change how the whole module compiles).
The rest of the reply (example calls, a __main__ block) is not part of the revision and is left out.
Every other byte of the module stays as it was.

Before that, the reply is refused if it uses a capability the original module does not: importing os,
subprocess, socket, shutil, ctypes or importlib, or naming open, exec, eval, compile or __import__. This is a
tripwire against the obvious, checked over the whole reply; the sandbox is what contains the rest.
"""

from __future__ import annotations

import ast
import copy
import io
import textwrap
from dataclasses import dataclass, field

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider


class CandidateError(Exception):
    """Why a reply cannot become a candidate, in one line: for the report and the next prompt."""


_PYTHON_LABELS = frozenset({"python", "py", "python3", "py3"})
_GUARDED_MODULES = frozenset({"os", "subprocess", "socket", "shutil", "ctypes", "importlib"})
_GUARDED_BUILTINS = frozenset({"open", "exec", "eval", "compile", "__import__"})
_BUILTINS_MODULES = frozenset({"builtins", "__builtins__"})


@dataclass
class _Block:
    label: str  # the first word after the opening fence, lower case; "" when unlabelled
    lines: list[str] = field(default_factory=list)
    closed: bool = False


def _fenced_blocks(reply: str) -> list[_Block]:
    blocks: list[_Block] = []
    current = None
    for line in reply.replace("\r\n", "\n").split("\n"):  # not splitlines: it breaks at \u2028 inside strings
        stripped = line.strip()
        if current is None:
            if stripped.startswith("```"):
                words = stripped.lstrip("`").split()
                current = _Block(words[0].lower() if words else "")
                blocks.append(current)
        elif stripped.startswith("```") and not stripped.strip("`"):
            current.closed = True
            current = None
        else:
            current.lines.append(line)
    return blocks


def extract_code(reply: str) -> str:
    """The code of the reply's first ```python (or ```py) block, else of its only unlabelled ``` block."""
    blocks = _fenced_blocks(reply)
    python = [b for b in blocks if b.label in _PYTHON_LABELS]
    unlabelled = [b for b in blocks if not b.label]
    if python:
        block = python[0]
    elif len(unlabelled) == 1:
        block = unlabelled[0]
    elif unlabelled:
        raise CandidateError("the reply has several unlabelled ``` blocks and no ```python block")
    else:
        raise CandidateError("the reply has no ```python block")
    if not block.closed:
        raise CandidateError("the reply's ```python block is never closed: the reply was probably cut short")
    code = textwrap.dedent("\n".join(block.lines))  # a block inside a Markdown list comes indented
    if not code.strip():
        raise CandidateError("the reply's ```python block is empty")
    return code.rstrip() + "\n"


def _split_qualname(qualname: str) -> tuple[str | None, str]:
    """(class, name) for "Class.method", (None, name) for "function"."""
    parts = qualname.split(".")
    if len(parts) <= 2 and all(part.isidentifier() for part in parts):
        return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    raise CandidateError(f"cannot revise {qualname}: only a top-level function or a method of a top-level class")


def _parse_ast(source: str, what: str) -> ast.Module:
    """The tree, once the source also compiles (which catches what parsing alone lets by, like a stray await)."""
    try:
        tree = ast.parse(source)
        compile(tree, "<candidate>", "exec", dont_inherit=True)
    except SyntaxError as e:
        where = f"line {e.lineno}: " if e.lineno else ""  # a null byte has no line
        raise CandidateError(f"{what} does not parse: {where}{e.msg}") from None
    return tree


def _parse_cst(source: str, what: str) -> cst.Module:
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as e:
        raise CandidateError(f"{what} does not parse: line {e.raw_line}: {e.message}") from None


# --- the capability tripwire ------------------------------------------------------------------------------


def _capabilities(tree: ast.Module) -> dict[str, str]:
    """Each guarded module or builtin the code uses -> how to say so, in the order they first appear."""
    found: dict[str, str] = {}
    for node in sorted(ast.walk(tree), key=_position):  # a stable sort: a call still comes before its name
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        else:
            modules = []
        for module in modules:
            top = module.split(".")[0]
            if top in _GUARDED_MODULES:
                found.setdefault(top, f"imports {top}")
        if isinstance(node, ast.Call) and (name := _guarded_builtin(node.func)):
            found.setdefault(name, f"calls {name}()")
        elif name := _guarded_builtin(node):
            found.setdefault(name, f"refers to {name}")
    return found


def _position(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 0), getattr(node, "col_offset", 0)


def _guarded_builtin(node: ast.AST) -> str | None:
    """`eval` or `builtins.eval` read as a value: the name, else None."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in _GUARDED_BUILTINS:
        return node.id
    if (
        isinstance(node, ast.Attribute)
        and node.attr in _GUARDED_BUILTINS
        and isinstance(node.value, ast.Name)
        and node.value.id in _BUILTINS_MODULES
    ):
        return node.attr
    return None


def _refuse_new_capabilities(reply: ast.Module, original: ast.Module) -> None:
    allowed = _capabilities(original)
    new = [use for key, use in _capabilities(reply).items() if key not in allowed]
    if new:
        raise CandidateError(f"refused: it {new[0]}, which the original does not use")


# --- finding definitions ----------------------------------------------------------------------------------


def _last_cst(statements, kind: type, name: str) -> int | None:
    """The index of the last `kind` statement named `name`: the one Python leaves bound."""
    found = None
    for i, statement in enumerate(statements):
        if isinstance(statement, kind) and statement.name.value == name:
            found = i
    return found


def _find_original(module: cst.Module, owner: str | None, name: str, qualname: str) -> tuple[int, int | None]:
    """Where the target is: its top-level statement's index, and for a method its index in the class body."""
    if owner is None:
        top = _last_cst(module.body, cst.FunctionDef, name)
        if top is not None:
            return top, None
    else:
        top = _last_cst(module.body, cst.ClassDef, owner)
        member = None if top is None else _last_cst(_class_members(module.body[top]), cst.FunctionDef, name)
        if member is not None:
            return top, member
    raise CandidateError(f"the module defines no {qualname}")


def _class_members(cls: cst.ClassDef) -> tuple:
    # A one-line class body (`class A: pass`) holds no defs.
    return cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()


def _reply_target(
    reply: cst.Module, owner: str | None, name: str, qualname: str
) -> tuple[cst.FunctionDef, cst.ClassDef | None]:
    """The reply's definition of the target, and for a method the class wrapped around it (None if bare)."""
    if owner is not None:
        at = _last_cst(reply.body, cst.ClassDef, owner)
        if at is not None:
            members = _class_members(reply.body[at])
            inner = _last_cst(members, cst.FunctionDef, name)
            if inner is not None:
                return members[inner], reply.body[at]
    at = _last_cst(reply.body, cst.FunctionDef, name)
    if at is None:
        raise CandidateError(f"the reply does not define {qualname}")
    return reply.body[at], None


# --- splicing ---------------------------------------------------------------------------------------------


def _comments_on_first_statement(reply: cst.Module) -> cst.Module:
    """libcst files the comments that open the block as the module's header: they describe its first statement."""
    if not reply.body:
        return reply
    first = reply.body[0]
    first = first.with_changes(leading_lines=[*reply.header, *first.leading_lines])
    return reply.with_changes(header=[], body=[first, *reply.body[1:]])


def _as_member(function: cst.FunctionDef, module: cst.Module, cls: cst.ClassDef) -> cst.FunctionDef:
    """A bare def taken into its class, indented as text: it most likely came out of a class by a dedent (the
    model's, or extract_code's), so its docstring, other multi-line strings and continuation lines go back too."""
    text = textwrap.indent(module.code_for_node(function), cls.body.indent or module.default_indent)
    return cst.parse_module("class _:\n" + text).body[0].body.body[0]


def _signature(function: cst.FunctionDef) -> str:
    """The parameters as a caller sees them: names, kinds, order, and which have defaults (not their values)."""
    params = function.params

    def one(param: cst.Param, stars: str = "") -> str:
        return stars + param.name.value + ("=..." if param.default is not None else "")

    parts = [one(p) for p in params.posonly_params]
    if params.posonly_params:
        parts.append("/")
    parts += [one(p) for p in params.params]
    if isinstance(params.star_arg, cst.Param):
        parts.append(one(params.star_arg, "*"))
    elif params.kwonly_params:
        parts.append("*")
    parts += [one(p) for p in params.kwonly_params]
    if params.star_kwarg is not None:
        parts.append(one(params.star_kwarg, "**"))
    return "(" + ", ".join(parts) + ")"


def _revised(original: cst.FunctionDef, reply: cst.FunctionDef, qualname: str) -> cst.FunctionDef:
    """The reply's definition in the original's place, under its decorators and the lines above it. Comment
    lines past its last statement are in its blocks, so they go with it (function_source counts them in)."""
    if (original.asynchronous is None) != (reply.asynchronous is None):
        was, now = ("an async def", "a plain def") if original.asynchronous else ("a plain def", "an async def")
        raise CandidateError(f"{qualname} was {was} and the reply makes it {now}")
    before, after = _signature(original), _signature(reply)
    if before != after:
        raise CandidateError(f"{qualname}'s signature changed: {before} became {after}")
    return reply.with_changes(
        decorators=original.decorators,
        lines_after_decorators=original.lines_after_decorators,
        leading_lines=original.leading_lines,
    )


def _bound_name(statement) -> str | None:
    """The name a def, class or `NAME = value` binds; None for any other statement."""
    if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
        return statement.name.value
    if isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1:
        small = statement.body[0]
        if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
            return small.targets[0].target.value
        if isinstance(small, cst.AnnAssign) and small.value is not None and isinstance(small.target, cst.Name):
            return small.target.value
    return None


def _same_code(a, b) -> bool:
    """Equal once comments and formatting are set aside."""
    render = cst.Module(body=[]).code_for_node
    return ast.dump(ast.parse(render(a))) == ast.dump(ast.parse(render(b)))


def _spaced(statement, blank_lines: int):
    """The statement with `blank_lines` blank lines before it, keeping the comments written above it."""
    comments = [line for line in statement.leading_lines if line.comment is not None]
    return statement.with_changes(leading_lines=[cst.EmptyLine(indent=False)] * blank_lines + comments)


def _merge_helpers(statements: list, helpers: list, target: int, blank_lines: int) -> None:
    """Puts each helper in `statements`: over the definition of its name if there is one, else just before
    statements[target]."""
    existing = {name: i for i, statement in enumerate(statements) if (name := _bound_name(statement))}
    new = []
    for helper in helpers:
        at = existing.get(_bound_name(helper))
        if at is None:
            new.append(_spaced(helper, blank_lines))
        elif not _same_code(statements[at], helper):
            statements[at] = helper.with_changes(leading_lines=statements[at].leading_lines)
    statements[target:target] = new


def _import_key(statement: ast.Import | ast.ImportFrom, alias: ast.alias) -> tuple:
    module, level = getattr(statement, "module", None), getattr(statement, "level", 0)
    return type(statement).__name__, module, level, alias.name, alias.asname


def _new_imports(reply: ast.Module, original: ast.Module) -> list[str]:
    """The reply's top-level imports, without the names the module already imports at its top level."""
    imports = (ast.Import, ast.ImportFrom)
    present = {_import_key(s, a) for s in original.body if isinstance(s, imports) for a in s.names}
    lines = []
    for statement in reply.body:
        if not isinstance(statement, imports) or getattr(statement, "module", None) == "__future__":
            continue
        missing = [a for a in statement.names if _import_key(statement, a) not in present]
        present.update(_import_key(statement, a) for a in missing)
        if missing:
            trimmed = copy.copy(statement)
            trimmed.names = missing
            lines.append(ast.unparse(trimmed))
    return lines


def _is_import(statement) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and any(
        isinstance(small, (cst.Import, cst.ImportFrom)) for small in statement.body
    )


def _is_docstring(statement) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and len(statement.body) == 1
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _add_imports(statements: list, lines: list[str]) -> None:
    """After the module's last top-level import; with none, at the top, below a docstring."""
    at = max((i + 1 for i, s in enumerate(statements) if _is_import(s)), default=None)
    if at is None:
        at = 1 if statements and _is_docstring(statements[0]) else 0
    statements[at:at] = [cst.parse_statement(line + "\n") for line in lines]


def splice(module_source: str, qualname: str, code: str) -> str:
    """The module's text with the reply's code for `qualname` ("function" or "Class.method") spliced in."""
    owner, name = _split_qualname(qualname)
    original_tree = _parse_ast(module_source, "the module")
    module = _parse_cst(module_source, "the module")
    if module.code != module_source:
        raise CandidateError("the module cannot be edited without changing other bytes (libcst does not round-trip it)")
    top, member = _find_original(module, owner, name, qualname)
    reply_tree = _parse_ast(code, "the code")
    reply = _comments_on_first_statement(_parse_cst(code, "the code"))
    _refuse_new_capabilities(reply_tree, original_tree)
    revision, wrapper = _reply_target(reply, owner, name, qualname)

    statements = list(module.body)
    if member is None:
        statements[top] = _revised(statements[top], revision, qualname)
    else:
        cls = statements[top]
        members = list(cls.body.body)
        if wrapper is None:
            revision = _as_member(revision, module, cls)
        members[member] = _revised(members[member], revision, qualname)
        if wrapper is not None:
            new_members = [m for m in _class_members(wrapper) if _bound_name(m) not in (None, name)]
            _merge_helpers(members, new_members, member, 1)
        statements[top] = cls.with_changes(body=cls.body.with_changes(body=members))

    helpers = [s for s in reply.body if _bound_name(s) not in (None, name, owner)]
    _merge_helpers(statements, helpers, top, 2)
    _add_imports(statements, _new_imports(reply_tree, original_tree))
    return module.with_changes(body=statements).code  # every piece parsed and compiled, so the whole does


def function_source(module_source: str, qualname: str) -> tuple[str, int, int]:
    """The target's text with its first and last line numbers (1-based, inclusive): from its first decorator
    to the last comment line inside its blocks, the span splice replaces."""
    owner, name = _split_qualname(qualname)
    module = _parse_cst(module_source, "the module")
    top, member = _find_original(module, owner, name, qualname)
    node = module.body[top] if member is None else module.body[top].body.body[member]
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    first = positions[node.decorators[0] if node.decorators else node].start.line
    length = len(_lines(module.code_for_node(node.with_changes(leading_lines=()))))
    return "".join(_lines(module_source)[first - 1 : first - 1 + length]), first, first + length - 1


def _lines(text: str) -> list[str]:
    """Split where Python breaks lines (\\n, \\r\\n, \\r), not at form feeds as str.splitlines does."""
    return io.StringIO(text, newline="").readlines()
