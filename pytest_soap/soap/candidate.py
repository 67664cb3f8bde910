"""A model's reply turned into a new text of the target's module, or refused with a one-line reason.

The reply carries its revision in one ```python block: the target, and perhaps other functions of the same
regression (the `revisable` ones, in the target's module), helpers and imports beside them. What enters the
module:
- each revised function's new definition (the target's, a revisable one's, or both), under the original's
  decorators (the reply cannot drop, change or add any: a decorator changes what callers get, and the
  behaviour check would not see that), with the parameters it had (names, kinds, order, which have defaults).
  A method comes in its class (`class Cart:` with just the methods revised) or as a bare def. For a property,
  the getter is what is revised; a setter beside it in the reply is left out;
- the reply's new top-level definitions (defs, classes, `NAME = value`), just before the first revised
  statement; new methods and class attributes likewise within their class;
- its top-level imports the module lacks, after the module's last top-level import (`from __future__`
  ones are left out: they change how the whole module compiles).
A reply that redefines anything else the module binds (a function, class, constant or import that is not
part of the regression) is refused, unless it is the same code. The rest of the reply (example calls, a
__main__ block) is not part of the revision and is left out. Every other byte of the module stays as it was.
Nested functions are revised through the function that defines them (see `enclosing`).

Before that, the reply is refused if it uses a capability the original module does not (in any of the forms
below; the first such use in the text is named). The capabilities, each as the whole reply shows it:
- importing os, subprocess, socket, shutil, ctypes, importlib, what lies under them (posix, nt, _socket...),
  the network's modules (urllib.request, http.client, ssl, ...), processes and threads (multiprocessing,
  threading, concurrent), signal, resource, mmap, runpy, code, marshal; or reaching one of the first ones
  through another module (pathlib.os, random._os, or `from pathlib import os`);
- naming open, exec, eval, compile, __import__ or globals, also as builtins.X or `from builtins import X`;
- reaching builtins by name: __builtins__ itself, getattr(builtins, ...), vars(builtins), builtins.__dict__;
- reaching modules through sys.modules (also through collections._sys, or `from sys import modules`);
- starting processes through os's names (.system, .popen, .fork, .exec*, .spawn*) or asyncio's
  (create_subprocess_exec, .subprocess_shell, ...), connecting through asyncio (open_connection, ...) or urlopen;
- writing files through a Path's methods (.write_text, .touch, .mkdir, .unlink, .rename(target), ...), opening
  them through io.open, io.FileIO, open_code or codecs.open;
- reaching interpreter internals: .__subclasses__, .__globals__, .__code__, frames (sys._getframe,
  inspect.currentframe, .f_globals, .f_back, ...), gc.get_objects;
- naming __import__, importlib, __builtins__, __subclasses__ or __globals__ in a string; getattr(x, "name")
  counts as x.name.
This is a tripwire against the simple tricks, not a wall: a name built at run time gets past it. The wall is
the audit hook of `wall.py`, in every process that runs a candidate.
"""

from __future__ import annotations

import ast
import builtins
import copy
import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, PositionProvider


class CandidateError(Exception):
    """Why a reply cannot become a candidate, in one line: for the report and the next prompt."""


_PYTHON_LABELS = frozenset({"python", "py", "python3", "py3"})


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
# A tripwire against the obvious, not a wall: what it cannot see (a name built at run time, say) is for the
# audit hook in wall.py. Each use found is keyed by its capability, and a capability the original module
# has is allowed in any form.

_GUARDED_MODULES = frozenset({  # imported, or reached as an attribute (urllib.request); keyed by the name
    "os", "subprocess", "socket", "shutil", "ctypes", "importlib",
    "posix", "nt", "_posixsubprocess", "_socket", "_ctypes", "cffi", "mmap", "pty", "signal", "resource",
    "urllib.request", "urllib.robotparser", "http.client", "http.server", "ftplib", "smtplib", "poplib",
    "imaplib", "telnetlib", "socketserver", "xmlrpc", "ssl", "webbrowser",  # not urllib.parse, http.HTTPStatus
    "multiprocessing", "threading", "_thread", "concurrent",  # processes, and threads racing the measurement
    "runpy", "code", "marshal",  # code run by a module's name or from bytes
})
# Modules that other modules hold under their own name (pathlib.os, random._os): reached through them.
_HELD_MODULES = frozenset({"os", "posix", "subprocess", "socket", "shutil", "ctypes", "importlib"})
# globals() holds __builtins__. Not so locals() nor vars(): in a function they give what it could name anyway
# (vars(obj) is obj.__dict__) and a model uses them now and then; at the top of a reply they are the globals,
# and a "__builtins__" looked up there is caught as a string.
_GUARDED_BUILTINS = frozenset({"open", "exec", "eval", "compile", "__import__", "globals"})
_BUILTINS_MODULES = frozenset({"builtins", "__builtins__"})
_FILE_MODULES = frozenset({"io", "_io", "codecs"})
_ATTRIBUTES = {  # capability -> (how to say it, the attributes that use it whatever they are read from)
    "processes": ("starts processes through", {
        "system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp",
        *(f"{verb}{form}" for verb in ("exec", "spawn") for form in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")),
        "create_subprocess_exec", "create_subprocess_shell", "subprocess_exec", "subprocess_shell",  # asyncio's
    }),
    "network": ("connects through", {
        "urlopen", "open_connection", "open_unix_connection", "start_server", "start_unix_server",
        "create_connection", "create_server", "create_unix_connection", "create_unix_server",
        "create_datagram_endpoint",
    }),
    "writes": ("writes files through", {  # a Path's; rename and replace count in _call_uses
        "write_text", "write_bytes", "touch", "mkdir", "unlink", "rmdir", "symlink_to", "hardlink_to", "chmod",
    }),
    "internals": ("reaches interpreter internals through", {
        "__subclasses__", "__globals__", "__code__", "f_globals", "f_builtins", "f_locals", "f_back",
        "_getframe", "currentframe", "_current_frames", "get_objects", "get_referrers", "get_referents",
    }),
}
_NAMED_IN_STRINGS = {  # a word in a string literal -> the capability it names (a dynamic import's, mostly)
    "__import__": "__import__", "importlib": "importlib", "__builtins__": "builtins",
    "__subclasses__": "internals", "__globals__": "internals",
}


def _capabilities(tree: ast.Module) -> dict[str, str]:
    """Each capability the code uses -> how to say so, in the order they first appear."""
    aliases = {a.asname: a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.asname}
    attribute_values = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    found: dict[str, str] = {}
    for node in sorted(ast.walk(tree), key=_position):  # a stable sort: a call still comes before its name
        for key, use in _uses(node, aliases, attribute_values):
            found.setdefault(key, use)
    return found


def _uses(node: ast.AST, aliases: dict[str, str], attribute_values: set[int]):
    """(capability, how to say so) for each use this node makes by itself."""
    if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
        yield from _import_uses(node)
    elif isinstance(node, ast.Call):
        yield from _call_uses(node, aliases)
    elif name := _guarded_builtin(node, aliases):
        yield name, f"refers to {name}"
    elif isinstance(node, ast.Attribute) and (use := _attribute_use(_dotted(node.value, aliases), node.attr)):
        yield use
    elif isinstance(node, ast.Name) and node.id == "__builtins__" and id(node) not in attribute_values:
        yield "builtins", "reaches builtins through __builtins__"  # __builtins__.X is judged as the attribute
    elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
        yield from ((key, f"names {word} in a string") for word, key in _NAMED_IN_STRINGS.items() if word in text)


def _import_uses(node: ast.Import | ast.ImportFrom):
    if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
    else:  # from urllib import request imports urllib.request (never relative here: module is set)
        modules = [node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names)]
    for module in modules:
        parts = module.split(".")
        guarded = [name for i in range(len(parts)) if (name := ".".join(parts[: i + 1])) in _GUARDED_MODULES]
        if guarded:
            yield guarded[0], f"imports {guarded[0]}"
    if isinstance(node, ast.ImportFrom):  # `from sys import modules` reads sys.modules
        yield from filter(None, (_attribute_use(node.module, alias.name) for alias in node.names))


def _call_uses(node: ast.Call, aliases: dict[str, str]):
    if name := _guarded_builtin(node.func, aliases):
        yield name, f"calls {name}()"
        return
    function = _dotted(node.func, aliases)
    first = _dotted(node.args[0], aliases) if node.args else None
    if function in ("getattr", "vars") and first in _BUILTINS_MODULES:
        yield "builtins", f"reaches builtins through {function}({first}{', ...' if function == 'getattr' else ''})"
    elif function in ("getattr", "setattr") and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
        if isinstance(node.args[1].value, str) and (use := _attribute_use(first, node.args[1].value)):
            yield use  # getattr(x, "system") is x.system
    elif isinstance(node.func, ast.Attribute) and node.func.attr in ("rename", "replace"):
        # Only as a Path's, with one argument: str.replace takes two, datetime's takes keywords, and
        # dataclasses.replace(obj) copies obj.
        value = _dotted(node.func.value, aliases)
        one = len(node.args) == 1 and not node.keywords and not isinstance(node.args[0], ast.Starred)
        if one and value not in ("dataclasses", "copy"):
            yield "writes", f"writes files through {_through(value, node.func.attr)}"


def _attribute_use(value: str | None, attr: str) -> tuple[str, str] | None:
    """Reading `attr` of `value` (a dotted name, None when it is not one): (capability, how to say so), or None."""
    through = _through(value, attr)
    if value in _BUILTINS_MODULES and attr in _GUARDED_BUILTINS:  # from builtins import eval
        return attr, f"refers to {attr}"
    held = attr.lstrip("_") in _HELD_MODULES and (value or "").rpartition(".")[2] != attr  # not socket.socket
    if through in _GUARDED_MODULES or held:
        module = through if through in _GUARDED_MODULES else attr.lstrip("_")
        return module, f"reaches {module} through {value or 'another object'}"
    # Any module is one subscript away through sys.modules: a real hostile reply wrote a file with
    # sys.modules["pathlib"] and read the environment with sys.modules["os"], past the import check.
    if attr == "modules" and value and value.split(".")[-1].lstrip("_") == "sys":
        return "sys.modules", f"reaches modules through {through}"
    # builtins.len is len; its __dict__, its __loader__, or a get when __builtins__ is the dict, are not.
    if (value in _BUILTINS_MODULES and (attr.startswith("_") or attr not in vars(builtins))) or attr == "__builtins__":
        return "builtins", f"reaches builtins through {through}"
    if (value in _FILE_MODULES and attr == "open") or attr in ("FileIO", "open_code"):
        return "opens files", f"opens files through {through}"
    for capability, (say, names) in _ATTRIBUTES.items():
        if attr in names and through != "platform.system":  # that one names the OS
            return capability, f"{say} {through}"
    return None


def _through(value: str | None, attr: str) -> str:
    return f"{value}.{attr}" if value else f".{attr}"


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """`a.b.c` for a chain of names, an imported module's alias read as its name; None for anything else."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute) and (value := _dotted(node.value, aliases)):
        return f"{value}.{node.attr}"
    return None


def _position(node: ast.AST) -> tuple[int, int]:
    """Where a use shows in the text: an attribute at its name (sys.modules[...].write_text names sys.modules
    first), a call where what it calls does."""
    if isinstance(node, ast.Call):
        return _position(node.func)
    if isinstance(node, ast.Attribute):
        return node.end_lineno or 0, (node.end_col_offset or 0) - len(node.attr)
    return getattr(node, "lineno", 0), getattr(node, "col_offset", 0)


def _guarded_builtin(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """`eval` or `builtins.eval` read as a value: the name, else None."""
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
        return None
    module, _, name = (_dotted(node, aliases) or "").rpartition(".")
    return name if name in _GUARDED_BUILTINS and module in ("", *_BUILTINS_MODULES) else None


def _refuse_new_capabilities(reply: ast.Module, original: ast.Module) -> None:
    allowed = _capabilities(original)
    new = [use for key, use in _capabilities(reply).items() if key not in allowed]
    if new:
        raise CandidateError(f"refused: it {new[0]}, which the original does not use")


# --- finding definitions ----------------------------------------------------------------------------------
# One set of rules for the loop, the plan and `soap optimize`'s check: what can be revised is a function at
# the top of its module or a method of a top-level class, the definition Python leaves bound to its name.

def enclosing(qualname: str) -> str:
    """The function to revise for a profiled qualname: a nested function, generator, lambda or class defined
    inside a function is reached through the top-level function or method that defines it
    (`Parser.parse.<locals>.gen` -> `Parser.parse`)."""
    return qualname.split(".<locals>.", 1)[0]


def _members(node) -> Sequence[cst.BaseStatement]:
    """The statements of a class's or function's body; a one-line body (`class A: pass`) holds no defs."""
    return node.body.body if isinstance(node.body, cst.IndentedBlock) else ()


def _is_accessor(node, name: str) -> bool:
    """A property's setter or deleter (`@name.setter`): it shares the getter's name but is not what is revised."""
    return any(
        isinstance(d.decorator, cst.Attribute)
        and d.decorator.attr.value in ("setter", "deleter")
        and isinstance(d.decorator.value, cst.Name)
        and d.decorator.value.value == name
        for d in getattr(node, "decorators", ())
    )


def _defined_at(statements, name: str) -> int | None:
    """The index of the last def or class named `name`, the one Python leaves bound; for a property, its getter
    (the setter is defined after it, under the same name)."""
    found = None
    for i, statement in enumerate(statements):
        if (isinstance(statement, (cst.FunctionDef, cst.ClassDef)) and statement.name.value == name
                and not _is_accessor(statement, name)):
            found = i
    return found


def _near_miss(scope, statements, name: str) -> str:
    """Where a definition of `name` that the qualname missed is, as the end of the message; "" when none is."""
    owners = [s.name.value for s in statements
              if isinstance(s, cst.ClassDef) and _defined_at(_members(s), name) is not None]
    if isinstance(scope, cst.Module) and owners:
        return f" (did you mean {owners[0]}.{name}?)"
    # the matcher finds only defs and classes, which have a name
    if any(n is not scope and n.name.value == name  # type: ignore[attr-defined]
           for n in m.findall(scope, m.FunctionDef() | m.ClassDef())):
        return f" where soap optimize can reach it (a {name} inside a function or an if, try or with block)"
    return ""


def _find_original(module: cst.Module, qualname: str, where: str | None = None) -> tuple[int, int | None]:
    """Where the target is: its top-level statement's index, and for a method its index in the class body.
    `where` names the module in the messages (a path), else "the module"."""
    parts = qualname.split(".")
    if not all(part.isidentifier() for part in parts):
        raise CandidateError(f"cannot revise {qualname}: only a top-level function or a method of a top-level class")

    def named(q: str) -> str:
        return f"{where}::{q}" if where else q

    scope: cst.Module | cst.BaseStatement = module
    statements: Sequence[cst.BaseStatement] = module.body
    chain, path = [], []
    for part in parts:
        at = _defined_at(statements, part)
        if at is None:
            raise CandidateError(f"{where or 'the module'} defines no {qualname}{_near_miss(scope, statements, part)}")
        scope = statements[at]
        chain.append(scope)
        path.append(at)
        statements = _members(scope)
    kinds = ["class" if isinstance(node, cst.ClassDef) else "function" for node in chain]
    if "function" in kinds[:-1]:  # only its enclosing function can reach it, so that is what to revise
        first = kinds.index("function")
        outer = ".".join(parts[: first + 1])
        hint = f": name {named(outer)}" if first <= 1 else ""  # itself a function or a top-level class's method
        raise CandidateError(f"{named(qualname)} is nested in the function {outer}; soap optimize revises whole "
                             f"top-level functions and methods{hint}")
    if kinds[-1] == "class":
        methods = [s.name.value for s in _members(scope) if isinstance(s, cst.FunctionDef)]
        example = f", e.g. {qualname}.{methods[0]}" if methods else ""
        raise CandidateError(f"{named(qualname)} is a class; name one of its methods{example}")
    if len(chain) > 2:
        raise CandidateError(f"{named(qualname)} is a method of the nested class {'.'.join(parts[:-1])}; soap "
                             "optimize revises a top-level function or a method of a top-level class")
    return path[0], path[1] if len(path) == 2 else None


def locate(module_source: str, qualname: str, where: str | None = None) -> None:
    """Raises CandidateError, in one line, when the loop cannot revise `qualname` in this module: it is not
    there (deleted, renamed, inside an if block), or it is a class, a nested function or a nested class's
    method. `where` names the module in the message (its path), else "the module"."""
    _find_original(_parse_cst(module_source, where or "the module"), qualname, where)


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
    indent = cls.body.indent if isinstance(cls.body, cst.IndentedBlock) else None  # a class with members has one
    text = textwrap.indent(module.code_for_node(function), indent or module.default_indent)
    # the parsed module is a class holding one def, which mypy cannot follow through libcst's unions
    return cst.parse_module("class _:\n" + text).body[0].body.body[0]  # type: ignore[union-attr,return-value]


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


def _module_names(tree: ast.Module) -> set[str]:
    """Every name the module binds at its top: defs, classes, assignments (unpacking and if/try blocks too) and
    imports. A reply's definition under one of them would rebind it for the whole module."""
    names: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif not isinstance(node, ast.Lambda):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            stack.extend(ast.iter_child_nodes(node))
    return names


@dataclass
class _Scope:
    """The module, or one of its classes, as the reply's definitions land in it."""

    statements: list  # as revised so far
    prefix: str  # "" or "Class."
    names: set[str]  # what it binds: a reply's definition under one of these is a redefinition
    new: list = field(default_factory=list)  # the reply's new definitions
    first: int | None = None  # where they go: before the first revised statement, else at the end

    def placed(self, blank_lines: int) -> list:
        at = len(self.statements) if self.first is None else self.first
        after = self.statements[at:]
        if self.new and after and all(line.comment is not None for line in after[0].leading_lines):
            after[0] = _spaced(after[0], blank_lines)  # it was first in its block: the new ones now stand above it
        new = [_spaced(s, blank_lines if i or at else 0) for i, s in enumerate(self.new)]  # none atop a block
        return [*self.statements[:at], *new, *after]


class _Splice:
    """Takes the reply's definitions into the module: the regression's functions (the unit) are revised, new
    names are added, and anything else the module defines must come back unchanged."""

    def __init__(self, module: cst.Module, tree: ast.Module, target: str, unit: set[str]):
        self.module, self.target, self.unit = module, target, unit
        self.top = _Scope(list(module.body), "", _module_names(tree))
        self.classes: dict[int, _Scope] = {}  # a class's index in the module -> its scope
        self.revised: list[str] = []

    def take(self, statements, scope: _Scope) -> None:
        for i, statement in enumerate(statements):
            name = _bound_name(statement)
            if name is None:  # example calls, a __main__ block, a docstring: not part of the revision
                continue
            chosen = isinstance(statement, cst.FunctionDef) and _defined_at(statements, name) == i
            method = self._bare_method(name, statements) if scope is self.top and chosen else None
            if method or scope.prefix + name in self.unit:
                if chosen:  # a setter or an overload beside the definition Python binds is not revised
                    self._revise(method or scope.prefix + name, statement, bare=bool(method))
            elif name not in scope.names:
                scope.new.append(statement)
            elif (cls := self._class_scope(scope, name, statement)) is not None:
                self.take(_members(statement), cls)
            elif not any(_bound_name(s) == name and _same_code(s, statement) for s in scope.statements):
                raise CandidateError(f"the reply redefines {scope.prefix}{name}, which is not part of the "
                                     "regression being optimised")

    def _bare_method(self, name: str, statements) -> str | None:
        """The method of the target's class that a bare def stands for, unless the reply's class defines it: the
        target itself, or a revisable class mate whose name the module does not bind at its top."""
        owner = self.target.rpartition(".")[0]
        wrapper = _defined_at(statements, owner) if owner else None
        if not owner or (wrapper is not None and isinstance(statements[wrapper], cst.ClassDef)
                         and _defined_at(_members(statements[wrapper]), name) is not None):
            return None
        method = f"{owner}.{name}"
        return method if method == self.target or (method in self.unit and name not in self.top.names) else None

    def _class_scope(self, scope: _Scope, name: str, statement) -> _Scope | None:
        """The scope of the module's class that a reply's class of the same name brings members into."""
        at = _defined_at(scope.statements, name)
        if scope is self.top and isinstance(statement, cst.ClassDef) and at is not None:
            cls = scope.statements[at]
            if isinstance(cls, cst.ClassDef) and isinstance(cls.body, cst.IndentedBlock):
                return self._class_at(at)
        return None

    def _class_at(self, at: int) -> _Scope:
        if at not in self.classes:
            cls = self.top.statements[at]
            names = {n for s in _members(cls) if (n := _bound_name(s))}
            self.classes[at] = _Scope(list(_members(cls)), f"{cls.name.value}.", names)
        return self.classes[at]

    def _revise(self, qualname: str, function: cst.FunctionDef, bare: bool) -> None:
        top, member = _find_original(self.module, qualname)
        self.top.first = top if self.top.first is None else min(self.top.first, top)
        scope, at = (self.top, top) if member is None else (self._class_at(top), member)
        if bare and member is not None:
            function = _as_member(function, self.module, self.top.statements[top])
        scope.first = at if scope.first is None else min(scope.first, at)
        scope.statements[at] = _revised(scope.statements[at], function, qualname)
        self.revised.append(qualname)

    def result(self) -> list:
        for at, scope in self.classes.items():
            cls = self.top.statements[at]
            self.top.statements[at] = cls.with_changes(body=cls.body.with_changes(body=scope.placed(1)))
        return self.top.placed(2)


def splice(module_source: str, qualname: str, code: str, revisable: tuple[str, ...] | list[str] = ()) -> str:
    """The module's text with the reply's code spliced in: its revision of `qualname` ("function" or
    "Class.method") and of the `revisable` functions of the same module, its new helpers and imports. A reply
    that revises none of them, or that redefines anything else of the module, is refused."""
    original_tree = _parse_ast(module_source, "the module")
    module = _parse_cst(module_source, "the module")
    if module.code != module_source:
        raise CandidateError("the module cannot be edited without changing other bytes (libcst does not round-trip it)")
    _find_original(module, qualname)
    others = [q for q in dict.fromkeys(revisable) if q != qualname and _reachable(module, q)]
    reply_tree = _parse_ast(code, "the code")
    reply = _comments_on_first_statement(_parse_cst(code, "the code"))
    _refuse_new_capabilities(reply_tree, original_tree)
    merge = _Splice(module, original_tree, qualname, {qualname, *others})
    merge.take(reply.body, merge.top)
    if not merge.revised:
        also = f" or any of {', '.join(others)}" if others else ""
        raise CandidateError(f"the reply does not define {qualname}{also}")
    statements = merge.result()
    _add_imports(statements, _new_imports(reply_tree, original_tree))
    return module.with_changes(body=statements).code  # every piece parsed and compiled, so the whole does


def check_revision(revised: str, original: str, qualname: str) -> None:
    """Raises CandidateError, in one line, when a whole revised module (an earlier run's revision, merged into
    this tree) cannot stand as a candidate: the target is not in it, or it uses what the original does not."""
    locate(revised, qualname, where="the earlier revision")
    _refuse_new_capabilities(_parse_ast(revised, "the earlier revision"), _parse_ast(original, "the module"))


def _reachable(module: cst.Module, qualname: str) -> bool:
    try:
        _find_original(module, qualname)
    except CandidateError:
        return False
    return True


def function_source(module_source: str, qualname: str) -> tuple[str, int, int]:
    """The target's text with its first and last line numbers (1-based, inclusive): from its first decorator
    to the last comment line inside its blocks, the span splice replaces."""
    module = _parse_cst(module_source, "the module")
    first, last = _span(module, _positions(module), qualname)
    return "".join(_lines(module_source)[first - 1 : last]), first, last


def function_spans(module_source: str, qualnames) -> dict[str, tuple[int, int]]:
    """function_source's line span of each of `qualnames` that the loop can revise, the others left out: one
    parse for them all (a real module takes a good part of a second)."""
    module = _parse_cst(module_source, "the module")
    positions = _positions(module)
    spans = {}
    for qualname in qualnames:
        try:
            spans[qualname] = _span(module, positions, qualname)
        except CandidateError:
            pass
    return spans


def _positions(module: cst.Module):
    return MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)


def _span(module: cst.Module, positions, qualname: str) -> tuple[int, int]:
    top, member = _find_original(module, qualname)
    node = module.body[top] if member is None else _members(module.body[top])[member]
    # node is a def or a class (_find_original's), both of which have decorators
    first = positions[node.decorators[0] if node.decorators else node].start.line  # type: ignore[attr-defined]
    length = len(_lines(module.code_for_node(node.with_changes(leading_lines=()))))
    return first, first + length - 1


def _lines(text: str) -> list[str]:
    """Split where Python breaks lines (\\n, \\r\\n, \\r), not at form feeds as str.splitlines does."""
    return io.StringIO(text, newline="").readlines()
