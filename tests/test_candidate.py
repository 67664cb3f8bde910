"""A model's reply turned into a module's new text: extraction, the checks that refuse it, and the splice."""

import io

import pytest

from pytest_soap.soap.candidate import CandidateError, enclosing, extract_code, function_source, locate, splice

SHOP = '''"""A shop."""
import math
from collections import Counter


# Prices are in cents.
def _rounded(x):
    return round(x)


@register
@cache(size=3)
def apply_discount(items, rate=0.1):
    total = 0
    for item in items:
        total += item
    return _rounded(total * (1 - rate))


class Cart:
    def __init__(self):
        self.items = []

    @property
    def total(self):
        return sum(self.items)

    def count(self):
        return len(self.items)
'''


def revise(module, qualname, code, revisable=()):
    """splice, checking what every result must be: a module that compiles."""
    result = splice(module, qualname, code, revisable)
    compile(result, "<result>", "exec")
    return result


def outside(module, qualname):
    """The module's text before and after the target's lines."""
    _, first, last = function_source(module, qualname)
    lines = io.StringIO(module, newline="").readlines()  # the line breaks Python counts
    return "".join(lines[: first - 1]), "".join(lines[last:])


def refused(module, qualname, code, revisable=()):
    with pytest.raises(CandidateError) as caught:
        splice(module, qualname, code, revisable)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- extraction -------------------------------------------------------------------------------------------


def test_a_labelled_block_is_the_code():
    reply = "Here is a faster version.\n\n```python\ndef f(x):\n    return x\n```\n\nIt avoids the loop."
    assert extract_code(reply) == "def f(x):\n    return x\n"


def test_py_label_and_any_case_count_as_python():
    assert extract_code("```py\nx = 1\n```") == "x = 1\n"
    assert extract_code("```Python3 title='f'\nx = 1\n```") == "x = 1\n"


def test_the_first_python_block_wins_over_other_languages_and_later_blocks():
    reply = "```text\nprofile\n```\n```python\nfirst = 1\n```\n```\nbare = 1\n```\n```python\nsecond = 1\n```"
    assert extract_code(reply) == "first = 1\n"


def test_a_single_unlabelled_block_is_taken():
    assert extract_code("Try:\n```\ndef f():\n    pass\n```\n") == "def f():\n    pass\n"


def test_only_real_line_breaks_split_the_reply():
    code = 'SEPARATOR = "\u2028"\r\nTABS = "\x0c"\n'
    assert extract_code("```python\r\n" + code + "```\r\n") == 'SEPARATOR = "\u2028"\nTABS = "\x0c"\n'


def test_a_block_inside_a_list_is_dedented():
    reply = "1. Replace it:\n   ```python\n   def f():\n       return 1\n   ```\n"
    assert extract_code(reply) == "def f():\n    return 1\n"


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("I would use a set here.", "the reply has no ```python block"),
        ("```bash\npip install x\n```", "the reply has no ```python block"),
        ("```\na = 1\n```\n```\nb = 2\n```", "the reply has several unlabelled ``` blocks and no ```python block"),
        ("```python\n\n   \n```", "the reply's ```python block is empty"),
        (
            "```python\ndef f():\n    return",
            "the reply's ```python block is never closed: the reply was probably cut short",
        ),
    ],
)
def test_a_reply_without_usable_code_is_refused(reply, reason):
    with pytest.raises(CandidateError) as caught:
        extract_code(reply)
    assert str(caught.value) == reason


# --- what the reply must be -------------------------------------------------------------------------------


def test_a_syntax_error_names_its_line():
    code = "def apply_discount(items, rate=0.1):\n    total = (\n    return total\n"
    assert refused(SHOP, "apply_discount", code).startswith("the code does not parse: line 2: ")


def test_a_null_byte_is_a_syntax_error_without_a_line():
    code = "def apply_discount(items, rate=0.1):\n    return 0\x00\n"
    assert refused(SHOP, "apply_discount", code) == "the code does not parse: source code string cannot contain null bytes"


def test_code_that_parses_but_cannot_compile_is_refused():
    code = "def apply_discount(items, rate=0.1):\n    return await items\n"
    assert refused(SHOP, "apply_discount", code) == "the code does not parse: line 2: 'await' outside async function"


def test_a_reply_defining_another_name_is_refused():
    code = "def apply_discounts(items, rate=0.1):\n    return 0\n"
    assert refused(SHOP, "apply_discount", code) == "the reply does not define apply_discount"
    code = "class Cart:\n    def size(self):\n        return 0\n"
    assert refused(SHOP, "Cart.count", code) == "the reply does not define Cart.count"


def test_a_target_the_module_lacks_is_named():
    assert refused(SHOP, "checkout", "def checkout():\n    pass\n") == "the module defines no checkout"
    assert refused(SHOP, "Cart.empty", "def empty(self):\n    pass\n") == "the module defines no Cart.empty"
    with pytest.raises(CandidateError, match=r"^the module defines no Cart\.empty$"):
        function_source(SHOP, "Cart.empty")


def test_a_nested_qualname_is_not_supported():
    message = refused(SHOP, "apply_discount.<locals>.inner", "def inner():\n    pass\n")
    assert message == "cannot revise apply_discount.<locals>.inner: only a top-level function or a method of a top-level class"


def test_a_module_that_does_not_parse_is_named_as_such():
    assert refused("def f(:\n", "f", "def f():\n    pass\n").startswith("the module does not parse: line 1: ")


@pytest.mark.parametrize(
    "header, became",
    [
        ("def apply_discount(items):", "(items)"),  # parameter removed
        ("def apply_discount(goods, rate=0.1):", "(goods, rate=...)"),  # renamed
        ("def apply_discount(items, rate):", "(items, rate)"),  # default dropped
        ("def apply_discount(items, rate=0.1, *args):", "(items, rate=..., *args)"),  # *args added
        ("def apply_discount(items, *, rate=0.1):", "(items, *, rate=...)"),  # made keyword-only
        ("def apply_discount(items, /, rate=0.1):", "(items, /, rate=...)"),  # made positional-only
        ("def apply_discount(rate=0.1, items=()):", "(rate=..., items=...)"),  # reordered
    ],
)
def test_a_changed_signature_is_refused_showing_both(header, became):
    message = refused(SHOP, "apply_discount", header + "\n    return 0\n")
    assert message == f"apply_discount's signature changed: (items, rate=...) became {became}"


def test_a_new_default_value_or_annotations_keep_the_signature():
    code = "def apply_discount(items: list[int], rate: float = 0.25) -> int:\n    return round(sum(items) * (1 - rate))\n"
    assert "rate: float = 0.25" in revise(SHOP, "apply_discount", code)


def test_every_parameter_kind_is_compared():
    module = "def f(a, /, b, *args, c, d=1, **kw):\n    return a\n"
    assert "return b" in revise(module, "f", "def f(a, /, b, *args, c, d=2, **kw):\n    return b\n")
    message = refused(module, "f", "def f(a, /, b, *args, c, d=1, **options):\n    return b\n")
    assert message == "f's signature changed: (a, /, b, *args, c, d=..., **kw) became (a, /, b, *args, c, d=..., **options)"


# --- async ------------------------------------------------------------------------------------------------

FETCH = "import asyncio\n\n\nasync def fetch(urls):\n    return [await get(u) for u in urls]\n"


def test_an_async_def_is_revised_as_an_async_def():
    code = "async def fetch(urls):\n    return await asyncio.gather(*(get(u) for u in urls))\n"
    assert revise(FETCH, "fetch", code) == "import asyncio\n\n\n" + code


def test_an_async_def_cannot_become_a_plain_def_nor_the_reverse():
    assert refused(FETCH, "fetch", "def fetch(urls):\n    return []\n") == (
        "fetch was an async def and the reply makes it a plain def"
    )
    assert refused("def f(x):\n    return x\n", "f", "async def f(x):\n    return x\n") == (
        "f was a plain def and the reply makes it an async def"
    )


# --- methods ----------------------------------------------------------------------------------------------


def test_a_method_wrapped_in_its_class_replaces_only_that_method():
    code = "class Cart:\n    def count(self):\n        return self.items.__len__()\n"
    result = revise(SHOP, "Cart.count", code)
    assert result == SHOP.replace("        return len(self.items)\n", "        return self.items.__len__()\n")


def test_a_bare_def_is_taken_as_the_method_and_indented_into_its_class():
    code = "def count(self):\n  n = 0\n  for _ in self.items:\n    n += 1\n  return n\n"
    result = revise(SHOP, "Cart.count", code)
    expected = "    def count(self):\n        n = 0\n        for _ in self.items:\n            n += 1\n        return n\n"
    assert result == SHOP.replace("    def count(self):\n        return len(self.items)\n", expected)


def test_a_bare_def_takes_the_module_s_indentation_in_a_two_space_module():
    module = "class A:\n  def m(self):\n    return 1\n"
    result = revise(module, "A.m", "def m(self):\n    if self:\n        return 2\n    return 3\n")
    assert result == "class A:\n  def m(self):\n    if self:\n      return 2\n    return 3\n"


def test_a_bare_def_written_at_the_methods_indentation_lands_as_written():
    module = 'class A:\n    def m(self):\n        """One."""\n        return 1\n'
    method = (
        '    def m(self):\n        """One.\n\n        Two."""\n'
        '        sql = """select 1\n                 from t"""\n'
        "        return sql + \\\n               ''\n"
    )
    assert revise(module, "A.m", extract_code(f"```python\n{method}```")) == "class A:\n" + method


def test_a_method_keeps_its_decorator_when_the_reply_drops_it():
    result = revise(SHOP, "Cart.total", "def total(self):\n    return math.fsum(self.items)\n")
    assert "    @property\n    def total(self):\n        return math.fsum(self.items)\n" in result


def test_new_methods_in_the_wrapping_class_go_just_before_the_target():
    code = (
        "class Cart:\n"
        "    def __init__(self):\n"
        "        self.items = []\n"
        "\n"
        "    def _length(self):\n"
        "        return len(self.items)\n"
        "\n"
        "    def count(self):\n"
        "        return self._length()\n"
    )
    result = revise(SHOP, "Cart.count", code)
    assert result.count("def __init__") == 1  # the unchanged __init__ is left as it was
    assert (
        "        return sum(self.items)\n\n"
        "    def _length(self):\n        return len(self.items)\n\n"
        "    def count(self):\n        return self._length()\n"
    ) in result


def test_a_reply_class_without_the_method_falls_back_to_a_bare_def():
    code = "class Cart:\n    pass\n\ndef count(self):\n    return 0\n"
    result = revise(SHOP, "Cart.count", code)
    assert "    def count(self):\n        return 0\n" in result
    assert result.count("class Cart") == 1


# --- decorators -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decorators",
    ["", "@register\n", "@cache(size=99)\n", "@register\n@cache(size=3)\n@functools.lru_cache\n"],
    ids=["dropped", "one-dropped", "changed", "one-added"],
)
def test_the_target_keeps_exactly_the_original_decorators(decorators):
    code = decorators + "def apply_discount(items, rate=0.1):\n    return _rounded(sum(items) * (1 - rate))\n"
    result = revise(SHOP, "apply_discount", code)
    assert "\n\n@register\n@cache(size=3)\ndef apply_discount(items, rate=0.1):\n    return _rounded(sum(" in result
    assert "lru_cache" not in result and "size=99" not in result


# --- helpers and imports ----------------------------------------------------------------------------------

NEW_BODY = "def apply_discount(items, rate=0.1):\n    return _rounded(_sum(items) * (1 - rate))\n"


def test_a_new_helper_goes_just_before_the_target_with_its_comment():
    code = "# Adds floats exactly.\ndef _sum(xs):\n    return math.fsum(xs)\n\n" + NEW_BODY
    result = revise(SHOP, "apply_discount", code)
    before, after = outside(SHOP, "apply_discount")
    assert result == before[: -len("\n\n")] + (
        "\n\n# Adds floats exactly.\ndef _sum(xs):\n    return math.fsum(xs)\n\n\n"
    ) + "@register\n@cache(size=3)\n" + NEW_BODY + after


def test_a_new_constant_goes_before_the_target():
    code = "_HALF: float = 0.5\n\n" + NEW_BODY.replace("(1 - rate)", "(_HALF - rate)")
    result = revise(SHOP, "apply_discount", code)
    assert "    return round(x)\n\n\n_HALF: float = 0.5\n\n\n@register\n" in result


def test_a_changed_revisable_helper_is_replaced_where_it_stands():
    code = "def _rounded(x):\n    return int(x + 0.5)\n\n" + NEW_BODY
    result = revise(SHOP, "apply_discount", code, revisable=("_rounded",))
    assert result.count("def _rounded") == 1
    assert "# Prices are in cents.\ndef _rounded(x):\n    return int(x + 0.5)\n\n\n@register" in result


def test_an_echoed_existing_helper_keeps_its_own_formatting():
    module = SHOP.replace("    return round(x)\n", "    # half to even\n    return round( x )\n")
    code = "def _rounded(x):\n    return round(x)\n\n" + NEW_BODY
    result = revise(module, "apply_discount", code)
    assert result.count("def _rounded") == 1
    assert "    # half to even\n    return round( x )\n" in result


def test_example_calls_and_a_main_block_are_left_out():
    code = NEW_BODY + "\nprint(apply_discount([1, 2]))\nif __name__ == '__main__':\n    apply_discount([])\n"
    result = revise(SHOP, "apply_discount", code)
    assert "print(" not in result and "__main__" not in result


def test_a_new_import_is_added_once_after_the_last_import():
    code = "import itertools\nimport itertools\nfrom collections import Counter, deque\n\n" + NEW_BODY
    result = revise(SHOP, "apply_discount", code)
    assert result.startswith(
        '"""A shop."""\nimport math\nfrom collections import Counter\n'
        "import itertools\nfrom collections import deque\n\n\n# Prices are in cents.\n"
    )
    assert result.count("import itertools") == 1


def test_an_import_the_module_has_is_not_repeated():
    code = "from __future__ import annotations\nimport math\nfrom collections import Counter\n\n" + NEW_BODY
    result = revise(SHOP, "apply_discount", code)
    before, _ = outside(SHOP, "apply_discount")
    assert result.startswith(before)  # nothing added above the target


def test_an_import_into_a_module_without_any_goes_below_its_docstring():
    module = '"""Doc."""\n\n\ndef f(xs):\n    return sorted(xs)[0]\n'
    result = revise(module, "f", "import heapq\n\ndef f(xs):\n    return heapq.nsmallest(1, xs)[0]\n")
    assert result == '"""Doc."""\nimport heapq\n\n\ndef f(xs):\n    return heapq.nsmallest(1, xs)[0]\n'


# --- the capability tripwire ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, module",
    [
        ("import os", "os"),
        ("import os.path", "os"),
        ("from os import path", "os"),
        ("import subprocess", "subprocess"),
        ("from subprocess import run", "subprocess"),
        ("import socket", "socket"),
        ("import shutil as sh", "shutil"),
        ("from ctypes import cdll", "ctypes"),
        ("import importlib", "importlib"),
        ("import importlib.util", "importlib"),
        *((f"import {name}", name) for name in (
            "urllib.request", "http.client", "http.server", "ftplib", "smtplib", "poplib", "imaplib", "telnetlib",
            "socketserver", "ssl", "webbrowser", "multiprocessing", "threading", "_thread", "pty", "signal", "posix",
            "nt", "_posixsubprocess", "_socket", "_ctypes", "cffi", "mmap", "resource", "runpy", "code", "marshal",
        )),
        ("from urllib import request", "urllib.request"),
        ("from xmlrpc.client import ServerProxy", "xmlrpc"),
        ("from concurrent.futures import ThreadPoolExecutor", "concurrent"),
        ("from multiprocessing import Pool", "multiprocessing"),
    ],
)
def test_a_new_guarded_import_is_refused(line, module):
    message = refused(SHOP, "apply_discount", line + "\n\n" + NEW_BODY)
    assert message == f"refused: it imports {module}, which the original does not use"


@pytest.mark.parametrize(
    "expression, name",
    [
        ("open('/etc/passwd').read()", "open"),
        ("exec('x = 1')", "exec"),
        ("eval('1 + 1')", "eval"),
        ("compile('1', 'f', 'eval')", "compile"),
        ("__import__('os')", "__import__"),
        ("builtins.open('f')", "open"),
        ("__builtins__.eval('1')", "eval"),
    ],
)
def test_a_new_guarded_call_is_refused(expression, name):
    code = f"def apply_discount(items, rate=0.1):\n    {expression}\n    return 0\n"
    assert refused(SHOP, "apply_discount", code) == f"refused: it calls {name}(), which the original does not use"


@pytest.mark.parametrize("code", [
    "import sys\n\ndef apply_discount(items, rate=0.1):\n    sys.modules['pathlib'].Path('/tmp/x').write_text('')\n    return 0\n",
    "from sys import modules\n\ndef apply_discount(items, rate=0.1):\n    return modules['os'].environ\n",
])
def test_reaching_a_module_through_sys_modules_is_refused(code):
    assert refused(SHOP, "apply_discount", code) == ("refused: it reaches modules through sys.modules, which the "
                                                     "original does not use")


def test_a_guarded_name_passed_around_is_refused_too():
    code = "def apply_discount(items, rate=0.1):\n    return sum(map(eval, items))\n"
    assert refused(SHOP, "apply_discount", code) == "refused: it refers to eval, which the original does not use"


def test_the_first_refused_use_in_the_code_is_named():
    code = "def apply_discount(items, rate=0.1):\n    if items:\n        for i in items:\n            open(i)\n    return eval\n"
    assert refused(SHOP, "apply_discount", code) == "refused: it calls open(), which the original does not use"


def test_the_tripwire_covers_helpers_and_imports_inside_functions():
    code = "def _sum(xs):\n    import subprocess\n    return 0\n\n" + NEW_BODY
    assert refused(SHOP, "apply_discount", code) == "refused: it imports subprocess, which the original does not use"


def test_a_method_call_of_the_same_name_is_not_the_builtin():
    code = "import re\n\ndef apply_discount(items, rate=0.1):\n    re.compile('x')\n    return self.open(items)\n"
    assert "re.compile('x')" in revise(SHOP, "apply_discount", code)


def test_what_the_original_module_uses_is_allowed():
    module = (
        "from os import path\n\n\ndef load(name):\n    with open(name) as f:\n        return f.read()\n\n\n"
        "def count(xs):\n    return len(xs)\n"
    )
    code = "import os\n\ndef count(xs):\n    with open(os.devnull) as f:\n        return sum(1 for _ in xs)\n"
    result = revise(module, "count", code)
    assert result.startswith("from os import path\nimport os\n")


def test_a_guarded_import_anywhere_in_the_original_allows_it():
    module = "def f():\n    import subprocess\n    return subprocess\n\n\ndef g(x):\n    return x\n"
    assert "subprocess.run" in revise(module, "g", "def g(x):\n    import subprocess\n    return subprocess.run\n")


def _reply(statement, imports=""):
    return f"{imports}\n\ndef apply_discount(items, rate=0.1):\n    {statement}\n    return 0\n"


@pytest.mark.parametrize("imports, statement, use", [
    # builtins reached by name
    ("", "getattr(__builtins__, 'ev' + 'al')('1')", "reaches builtins through getattr(__builtins__, ...)"),
    ("import builtins", "getattr(builtins, name)", "reaches builtins through getattr(builtins, ...)"),
    ("import builtins as b", "vars(b)['len']", "reaches builtins through vars(builtins)"),
    ("", "__builtins__['len']", "reaches builtins through __builtins__"),
    ("", "table = __builtins__", "reaches builtins through __builtins__"),
    ("", "__builtins__.get('len')", "reaches builtins through __builtins__.get"),
    ("import builtins", "builtins.__dict__['len']", "reaches builtins through builtins.__dict__"),
    ("import builtins", "builtins.__loader__.load_module('os')", "reaches builtins through builtins.__loader__"),
    ("from builtins import eval as e", "e('1')", "refers to eval"),
    ("", "globals()['_rounded'](items)", "calls globals()"),
    # names in strings
    ("", "{}.get('__import__')", "names __import__ in a string"),
    ("", "[b'importlib.util']", "names importlib in a string"),
    ("", "locals()['__builtins__']", "names __builtins__ in a string"),
    ("", "f'{items}.__globals__'", "names __globals__ in a string"),
    ("import operator", "operator.attrgetter('__subclasses__')", "names __subclasses__ in a string"),
    # an attribute named in a string is the attribute
    ("import pathlib", "getattr(pathlib, 'os').system('ls')", "reaches os through pathlib"),
    ("", "getattr(items, 'system')('ls')", "starts processes through items.system"),
    # modules reached through other modules
    ("import pathlib", "pathlib.os.system('ls')", "reaches os through pathlib"),
    ("import random", "random._os.urandom(4)", "reaches os through random"),
    ("from pathlib import os", "os.environ", "reaches os through pathlib"),
    ("import urllib.parse", "urllib.request.urlopen('http://x')", "reaches urllib.request through urllib"),
    ("import collections", "collections._sys.modules['os']", "reaches modules through collections._sys.modules"),
    ("import sys as s", "s.modules['os']", "reaches modules through sys.modules"),
    ("import pathlib", "pathlib.os.sys.modules['os']", "reaches os through pathlib"),
    # processes and the network through asyncio
    ("import asyncio", "asyncio.run(asyncio.create_subprocess_shell('ls'))",
     "starts processes through asyncio.create_subprocess_shell"),
    ("from asyncio import create_subprocess_exec", "create_subprocess_exec('ls')",
     "starts processes through asyncio.create_subprocess_exec"),
    ("import asyncio", "asyncio.get_event_loop().subprocess_exec(items, 'ls')",
     "starts processes through .subprocess_exec"),
    ("import asyncio", "asyncio.open_connection('localhost', 80)", "connects through asyncio.open_connection"),
    # files written or opened
    ("import pathlib", "pathlib.Path('/tmp/x').write_text('')", "writes files through .write_text"),
    *(("", f"items.{name}()", f"writes files through items.{name}") for name in (
        "write_bytes", "touch", "mkdir", "unlink", "rmdir", "symlink_to", "hardlink_to", "chmod")),
    ("", "items.rename('/tmp/y')", "writes files through items.rename"),
    ("", "items.replace('/tmp/y')", "writes files through items.replace"),
    ("import io", "io.open('/tmp/x', 'w')", "opens files through io.open"),
    ("from io import FileIO", "FileIO('/tmp/x', 'w')", "opens files through io.FileIO"),
    ("import io", "io.open_code('/tmp/x')", "opens files through io.open_code"),
    ("import codecs", "codecs.open('/tmp/x', 'w')", "opens files through codecs.open"),
    # interpreter internals
    ("", "().__class__.__base__.__subclasses__()", "reaches interpreter internals through .__subclasses__"),
    ("", "apply_discount.__globals__['_rounded']", "reaches interpreter internals through apply_discount.__globals__"),
    ("", "apply_discount.__code__ = None", "reaches interpreter internals through apply_discount.__code__"),
    ("import sys", "sys._getframe().f_globals", "reaches interpreter internals through sys._getframe"),
    ("import inspect", "inspect.currentframe().f_back", "reaches interpreter internals through inspect.currentframe"),
    ("", "items.gi_frame.f_builtins", "reaches interpreter internals through items.gi_frame.f_builtins"),
    ("import gc", "gc.get_objects()", "reaches interpreter internals through gc.get_objects"),
])
def test_a_capability_reached_a_less_obvious_way_is_refused(imports, statement, use):
    message = refused(SHOP, "apply_discount", _reply(statement, imports))
    assert message == f"refused: it {use}, which the original does not use"


@pytest.mark.parametrize("original, reply", [
    ("import builtins\nF = vars(builtins)", ("import builtins", "getattr(builtins, 'len')")),
    ("G = globals()", ("", "globals()['_rounded'](items)")),
    ("import importlib\nM = importlib.import_module('json')", ("", "NAME = 'importlib.util'")),
    ("import os", ("import pathlib", "pathlib.os.getcwd()")),  # os by another way
    ("import sys\nM = sys.modules", ("from sys import modules", "modules['json']")),
    ("import threading", ("from threading import Lock", "Lock()")),
    ("import pathlib\npathlib.Path('x').write_text('')", ("", "items.touch()")),  # another write
    ("import asyncio\nasyncio.create_subprocess_exec('ls')", ("", "items.create_subprocess_shell('')")),
    ("import io\nio.open('x')", ("from io import FileIO", "FileIO('x')")),
    ("import sys\nsys._getframe()", ("", "apply_discount.__globals__")),
])
def test_a_less_obvious_use_the_original_has_is_allowed(original, reply):
    module = f"{original}\n\n\ndef apply_discount(items, rate=0.1):\n    return 1\n"
    assert "return 0" in revise(module, "apply_discount", _reply(reply[1], reply[0]))


def test_a_plain_optimisation_with_the_usual_modules_is_accepted():
    code = '''import bisect
import collections
import dataclasses
import datetime
import heapq
import itertools
import operator
import platform
import re
from functools import lru_cache

_WORD = re.compile(r"\\w+")


class _Pair:
    __slots__ = ("key", "value")

    def __init__(self, key, value):
        self.key, self.value = key, value


@lru_cache(maxsize=None)
def _rate(rate):
    return 1 - rate


def apply_discount(items, rate=0.1):
    counts = collections.defaultdict(int)
    for item in itertools.chain.from_iterable([items]):
        counts[item] = counts.get(item, 0) + 1
    seen = {item for item in items}
    index = {item: i for i, item in enumerate(sorted(seen))}
    top = heapq.nlargest(3, index.items(), key=operator.itemgetter(1))
    where = bisect.bisect_left(sorted(seen), 0)
    label = " ".join(str(k) for k, _ in top).replace("-", "_").strip()
    words = _WORD.findall(label)
    pair = _Pair(len(words), where)
    state = vars(pair) if hasattr(pair, "__dict__") else {s: getattr(pair, s) for s in pair.__slots__}
    assert locals() and state is not None
    when = datetime.datetime(2024, 1, 1).replace(tzinfo=None)
    if platform.system() == "Windows" and dataclasses.is_dataclass(items):
        items = dataclasses.replace(items)
    return _rounded(sum(items) * _rate(rate))
'''
    assert "heapq.nlargest" in revise(SHOP, "apply_discount", code)


# --- the rest of the module, byte for byte ----------------------------------------------------------------

ODD = (
    "#!/usr/bin/env python\n"
    "# -*- coding: utf-8 -*-\n"
    "import sys ;  import re   \n"
    "TABLE = [1,\n"
    "         2,   # two\n"
    "    3]\n"
    "\x0c\n"
    "def   before( a ) :  return a  # one-liner\n"
    "\n"
    "# about the target\n"
    "@decorate( 1 ,\n"
    "   2 )\n"
    "\n"
    "# between decorator and def\n"
    "def target(xs,\n"
    "           key = None):   # header comment\n"
    "\tresult = [x for x in xs\n"
    "\t          if x]\n"
    "\treturn result\n"
    "\t# trailing comment inside the block\n"
    "x = \\\n"
    "    target([])\n"
    "class  After :\n"
    "  def m (self) : pass\n"
    "# no newline at the end"
)


def test_every_byte_outside_the_target_stays():
    before, after = outside(ODD, "target")
    result = revise(ODD, "target", "def target(xs, key=None):\n    return list(filter(None, xs))\n")
    assert result.startswith(before) and result.endswith(after)
    assert before.endswith("# about the target\n")
    assert after.startswith("x = \\\n")
    assert result[len(before) : len(result) - len(after)] == (
        "@decorate( 1 ,\n   2 )\n\n# between decorator and def\ndef target(xs, key=None):\n\treturn list(filter(None, xs))\n"
    )


def test_a_one_line_revision_keeps_the_lines_after_the_target():
    before, after = outside(ODD, "target")
    result = revise(ODD, "target", "def target(xs, key=None): return [x for x in xs if x]\n")
    assert result.startswith(before) and result.endswith(after)


def test_every_byte_outside_a_method_stays():
    before, after = outside(SHOP, "Cart.total")
    result = revise(SHOP, "Cart.total", "class Cart:\n    @property\n    def total(self):\n        return math.fsum(self.items)\n")
    assert result == before + "    @property\n    def total(self):\n        return math.fsum(self.items)\n" + after


def test_comment_lines_closing_the_function_s_blocks_are_part_of_it():
    module = (
        "def f(xs):\n    for x in xs:\n        if x:\n            break\n\n            # next one\n\n    # done\n"
        "\n# about g\ndef g():\n    pass\n"
    )
    text, first, last = function_source(module, "f")
    assert (first, last) == (1, 8) and text.endswith("            # next one\n\n    # done\n")
    result = revise(module, "f", "def f(xs):\n    return any(xs)\n")
    assert result == "def f(xs):\n    return any(xs)\n\n# about g\ndef g():\n    pass\n"


def test_windows_line_endings_carry_into_the_revision():
    module = "import math\r\n\r\n\r\ndef f(x):\r\n    return x * 2\r\n"
    result = revise(module, "f", "import heapq\n\ndef f(x):\n    # doubled\n    return x + x\n")
    assert result == "import math\r\nimport heapq\r\n\r\n\r\ndef f(x):\r\n    # doubled\r\n    return x + x\r\n"


def test_a_module_libcst_cannot_reproduce_is_refused_rather_than_altered():
    module = "def f():\n    return 1\n\x0cdef g():\n    return 2\n"
    assert refused(module, "f", "def f():\n    return 3\n") == (
        "the module cannot be edited without changing other bytes (libcst does not round-trip it)"
    )


# --- function_source --------------------------------------------------------------------------------------


def test_function_source_includes_decorators_and_gives_the_line_span():
    text, first, last = function_source(SHOP, "apply_discount")
    assert (first, last) == (11, 17)
    assert text.startswith("@register\n@cache(size=3)\ndef apply_discount(") and text.endswith("(1 - rate))\n")


def test_function_source_of_a_method_keeps_its_indentation():
    assert function_source(SHOP, "Cart.total") == ("    @property\n    def total(self):\n        return sum(self.items)\n", 24, 26)


def test_function_source_counts_lines_as_python_does():
    # A form feed is no line break to Python, though str.splitlines treats it as one.
    module = "x = 1\x0c  # a form feed\n\n\ndef f():\n    return 1\n"
    assert function_source(module, "f") == ("def f():\n    return 1\n", 4, 5)


def test_the_last_definition_of_a_name_is_the_target():
    module = "def f():\n    return 1\n\n\ndef f():\n    return 2\n"
    assert function_source(module, "f")[1:] == (5, 6)
    assert revise(module, "f", "def f():\n    return 3\n") == "def f():\n    return 1\n\n\ndef f():\n    return 3\n"


# --- the regression as a unit: what else a reply may revise -----------------------------------------------


def test_a_reply_that_redefines_an_unrelated_function_is_refused():
    code = "def _rounded(x):\n    return int(x + 0.5)\n\n" + NEW_BODY
    assert refused(SHOP, "apply_discount", code) == (
        "the reply redefines _rounded, which is not part of the regression being optimised")


@pytest.mark.parametrize("definition, name", [
    ("math = None\n", "math"),  # an import
    ("def math(x):\n    return x\n", "math"),
    ("class Counter(dict):\n    pass\n", "Counter"),
    ("class Cart:\n    def count(self):\n        return 0\n", "Cart.count"),  # a class mate of no concern
    ("class Cart:\n    total = 0\n", "Cart.total"),
])
def test_redefining_anything_else_the_module_binds_is_refused(definition, name):
    message = refused(SHOP, "apply_discount", definition + "\n" + NEW_BODY)
    assert message == f"the reply redefines {name}, which is not part of the regression being optimised"


def test_a_changed_constant_is_refused_and_an_unchanged_one_ignored():
    module = "LIMIT = 10\n\n\ndef f(xs):\n    return xs[:LIMIT]\n"
    assert refused(module, "f", "LIMIT = 5\n\ndef f(xs):\n    return xs[:LIMIT]\n") == (
        "the reply redefines LIMIT, which is not part of the regression being optimised")
    assert revise(module, "f", "LIMIT = 10  # same\n\ndef f(xs):\n    return list(xs[:LIMIT])\n") == (
        "LIMIT = 10\n\n\ndef f(xs):\n    return list(xs[:LIMIT])\n")


def test_a_name_bound_by_unpacking_or_inside_a_block_counts_as_the_module_s():
    module = "A, B = 1, 2\ntry:\n    import simplejson as json\nexcept ImportError:\n    json = None\n\n\ndef f():\n    return A\n"
    assert "redefines B" in refused(module, "f", "B = 3\n\ndef f():\n    return A + 0\n")
    assert "redefines json" in refused(module, "f", "def json():\n    pass\n\ndef f():\n    return A + 0\n")


def test_the_target_and_a_revisable_function_are_revised_together_with_a_new_helper():
    code = ("def _cents(x):\n    return int(x + 0.5)\n\n"
            "def _rounded(x):\n    return _cents(x)\n\n" + NEW_BODY + "\ndef _sum(xs):\n    return sum(xs)\n")
    result = revise(SHOP, "apply_discount", code, revisable=("_rounded",))
    assert result.count("def _rounded") == 1 and "    return _cents(x)\n" in result
    assert result.index("def _cents") < result.index("# Prices are in cents.\ndef _rounded")  # before the first revised
    assert result.index("def _sum") < result.index("@register")
    assert "_rounded(_sum(items)" in result


def test_a_reply_revising_only_a_revisable_function_is_accepted():
    result = revise(SHOP, "apply_discount", "def _rounded(x):\n    return int(x + 0.5)\n", revisable=("_rounded",))
    assert "    return int(x + 0.5)\n" in result and "total += item" in result  # the target left as it was


def test_a_reply_revising_nothing_of_the_unit_names_it_all():
    code = "def _helper(x):\n    return x\n"
    assert refused(SHOP, "apply_discount", code, revisable=("_rounded", "Cart.count")) == (
        "the reply does not define apply_discount or any of _rounded, Cart.count")


def test_a_revisable_function_keeps_its_decorators_and_signature():
    module = "import functools\n\n\n@functools.lru_cache\ndef g(n):\n    return n\n\n\ndef f(n):\n    return g(n)\n"
    assert refused(module, "f", "def g(m):\n    return m\n", revisable=["g"]) == (
        "g's signature changed: (n) became (m)")
    result = revise(module, "f", "def g(n):\n    return n + 0\n", revisable=["g"])
    assert "@functools.lru_cache\ndef g(n):\n    return n + 0\n" in result


def test_a_revisable_name_the_module_lacks_is_left_aside():
    code = "def gone(x):\n    return x\n\n" + NEW_BODY
    result = revise(SHOP, "apply_discount", code, revisable=("gone", "f.<locals>.g"))
    assert "def gone(x)" in result  # a new helper, like any new name


SHAPES = '''class Shape:
    SIDES = 0
    SCALE = 2

    def area(self):
        return self._side() ** 2 * self.SCALE

    def _side(self):
        return 1

    def name(self):
        return "shape"


class Grid:
    def cells(self):
        return [Shape().area() for _ in range(3)]
'''


def test_a_method_and_its_revisable_class_mate_are_revised_in_their_class():
    code = ("class Shape:\n    UNIT = 1\n\n    def area(self):\n        return self._side() * self._side() * self.SCALE\n\n"
            "    def _side(self):\n        return self.UNIT\n")
    result = revise(SHAPES, "Shape.area", code, revisable=("Shape._side",))
    assert "    SCALE = 2\n\n    UNIT = 1\n\n    def area(self):\n" in result  # a new class attribute, before area
    assert "    def _side(self):\n        return self.UNIT\n" in result


def test_a_class_mate_comes_in_as_a_bare_def_too():
    code = "def area(self):\n    return self._side() * 2\n\ndef _side(self):\n    return 2\n"
    result = revise(SHAPES, "Shape.area", code, revisable=("Shape._side",))
    assert "    def area(self):\n        return self._side() * 2\n" in result
    assert "    def _side(self):\n        return 2\n" in result and "def _side" not in result.split("class Grid")[1]


def test_a_changed_class_attribute_or_unrelated_method_is_refused():
    code = "class Shape:\n    SCALE = 3\n\n    def area(self):\n        return 0\n"
    assert refused(SHAPES, "Shape.area", code) == (
        "the reply redefines Shape.SCALE, which is not part of the regression being optimised")
    code = "class Shape:\n    def name(self):\n        return 'square'\n\n    def area(self):\n        return 0\n"
    assert "redefines Shape.name" in refused(SHAPES, "Shape.area", code)


def test_a_revisable_method_of_another_class_comes_in_its_class():
    code = "class Shape:\n    def area(self):\n        return 2\n"
    result = revise(SHAPES, "Grid.cells", code, revisable=("Shape.area",))
    assert "    def area(self):\n        return 2\n" in result and "return [Shape().area()" in result


# --- every kind of function -------------------------------------------------------------------------------

KINDS = '''import functools


def traced(f):
    @functools.wraps(f)
    def wrapper(*args):
        return f(*args)
    return wrapper


class Box:
    def __init__(self):
        self._items = [3, 1, 2]

    @property
    def items(self):
        return sorted(self._items)

    @items.setter
    def items(self, value):
        self._items = list(value)

    @classmethod
    def make(cls, n):
        return [cls() for _ in range(n)]

    @staticmethod
    def total(xs):
        return sum(xs)

    @functools.cached_property
    def first(self):
        return self.items[0]


def tokens(text):
    for word in text.split():
        yield word


async def fetch(keys):
    return [k for k in keys]


async def stream(keys):
    for k in keys:
        yield k


@traced
def wrapped(x):
    return x


@functools.lru_cache(maxsize=None)
def cached(n):
    return n
'''


def test_a_property_s_getter_is_the_target_not_its_setter():
    text, _, _ = function_source(KINDS, "Box.items")
    assert text.startswith("    @property\n    def items(self):") and "setter" not in text
    code = ("class Box:\n    @property\n    def items(self):\n        return sorted(self._items, key=int)\n\n"
            "    @items.setter\n    def items(self, value):\n        self._items = []\n")
    result = revise(KINDS, "Box.items", code)
    assert "    @property\n    def items(self):\n        return sorted(self._items, key=int)\n" in result
    assert "        self._items = list(value)\n" in result  # the setter beside it is not revised


@pytest.mark.parametrize("qualname, code, expected", [
    ("Box.make", "def make(cls, n):\n    return [cls()] * n\n",
     "    @classmethod\n    def make(cls, n):\n        return [cls()] * n\n"),
    ("Box.total", "class Box:\n    @staticmethod\n    def total(xs):\n        return sum(xs, 0)\n",
     "    @staticmethod\n    def total(xs):\n        return sum(xs, 0)\n"),
    ("Box.first", "def first(self):\n    return min(self._items)\n",
     "    @functools.cached_property\n    def first(self):\n        return min(self._items)\n"),
    ("tokens", "def tokens(text):\n    yield from text.split()\n", "def tokens(text):\n    yield from text.split()\n"),
    ("fetch", "async def fetch(keys):\n    return list(keys)\n", "async def fetch(keys):\n    return list(keys)\n"),
    ("stream", "async def stream(keys):\n    for k in list(keys):\n        yield k\n",
     "async def stream(keys):\n    for k in list(keys):\n"),
    ("wrapped", "def wrapped(x):\n    return x + 0\n", "@traced\ndef wrapped(x):\n    return x + 0\n"),
    ("cached", "def cached(n):\n    return n + 0\n", "@functools.lru_cache(maxsize=None)\ndef cached(n):\n    return n + 0\n"),
])
def test_every_kind_of_function_is_revised_under_its_decorators(qualname, code, expected):
    locate(KINDS, qualname)
    assert expected in revise(KINDS, qualname, code)


@pytest.mark.parametrize("qualname, becomes", [
    ("Parser.parse.<locals>.gen", "Parser.parse"),
    ("f.<locals>.g", "f"),
    ("f.<locals>.g.<locals>.h", "f"),
    ("f.<locals>.<lambda>", "f"),
    ("f.<locals>.Node.walk", "f"),
    ("Cart.total", "Cart.total"),
])
def test_a_nested_function_is_revised_through_the_function_that_defines_it(qualname, becomes):
    assert enclosing(qualname) == becomes


@pytest.mark.parametrize("qualname, message", [
    ("traced.wrapper", "traced.wrapper is nested in the function traced; soap optimize revises whole top-level "
                       "functions and methods: name traced"),
    ("Box", "Box is a class; name one of its methods, e.g. Box.__init__"),
    ("items", "the module defines no items (did you mean Box.items?)"),
    ("<lambda>", "cannot revise <lambda>: only a top-level function or a method of a top-level class"),
    ("gone", "the module defines no gone"),
])
def test_what_cannot_be_revised_is_said_in_one_line(qualname, message):
    with pytest.raises(CandidateError) as caught:
        locate(KINDS, qualname)
    assert str(caught.value) == message


def test_a_nested_class_s_method_is_named_as_such_with_the_module_s_path():
    module = "class A:\n    class B:\n        def m(self):\n            return 1\n"
    with pytest.raises(CandidateError) as caught:
        locate(module, "A.B.m", where="pkg/a.py")
    assert str(caught.value) == ("pkg/a.py::A.B.m is a method of the nested class A.B; soap optimize revises a "
                                 "top-level function or a method of a top-level class")


def test_soap_optimize_s_check_follows_the_same_rules(tmp_path, monkeypatch):
    from pytest_soap import cli

    (tmp_path / "kinds.py").write_text(KINDS)
    monkeypatch.chdir(tmp_path)
    for qualname in ("Box.items", "Box.first", "stream", "wrapped"):
        assert cli.check_target(f"kinds.py::{qualname}", tmp_path.resolve()) == ("kinds.py", qualname)
    with pytest.raises(cli.BadTarget) as caught:
        cli.check_target("kinds.py::traced.wrapper", tmp_path.resolve())
    assert str(caught.value) == ("kinds.py::traced.wrapper is nested in the function traced; soap optimize revises "
                                 "whole top-level functions and methods: name kinds.py::traced")
