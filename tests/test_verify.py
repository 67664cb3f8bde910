"""The check and the race (verify.py): one pytest session in a real sandbox, the candidate in the tree, each
call of a changed function checked against the original's on deep copies of its arguments, then the
regressed tests timed with the best and the candidate in turn."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from pytest_soap.soap.loop import behaviour
from pytest_soap.soap.sandbox import Sandbox, verify
from pytest_soap.soap.verify import MAX_ITEMS, MAX_SAMPLED, same

from test_sandbox import PKG, make_repo

LIMIT_S = 120.0


def check(root: Path, files: dict[str, str], qualname: str, candidate: str, target: str = "pkg/calc.py",
          race=(), champion: str | None = None, tests=("tests",)):
    """The original is files[target]; the candidate replaces it in the sandbox; the tests must still pass
    (the point: they are too weak to see the difference)."""
    make_repo(root, files)
    with Sandbox(root) as sandbox:
        sandbox.write(target, candidate)
        result = verify(sandbox, target, qualname, list(tests), files[target], champion, list(race), LIMIT_S, 0)
        assert sandbox.read(target) == candidate  # the candidate stays in the tree
    assert result.run.status == "passed", result.run.reason
    return result


TOP3 = "def top3(xs):\n    return sorted(xs, reverse=True)[:3]\n"
WEAK_TOP3_TESTS = (  # they only check the length, and import the function both ways
    "import pkg.calc\n"
    "from pkg.calc import top3\n"
    "def test_length():\n"
    "    assert len(top3([5, 1, 4, 2, 3])) == 3\n"
    "def test_short_input():\n"
    "    assert len(pkg.calc.top3([7])) == 1\n")


def test_a_wrong_candidate_that_weak_tests_pass_is_caught(tmp_path):
    result = check(tmp_path, {**PKG, "pkg/calc.py": TOP3, "tests/test_calc.py": WEAK_TOP3_TESTS},
                   "top3", "def top3(xs):\n    return xs[:3]\n")
    assert result.mismatch == "call 1 of top3, top3([5, 1, 4, 2, 3]): returned [5, 1, 4] where the original returned [5, 4, 3]"


def test_a_correct_candidate_written_differently_is_the_same(tmp_path):
    result = check(tmp_path, {**PKG, "pkg/calc.py": TOP3, "tests/test_calc.py": WEAK_TOP3_TESTS},
                   "top3", "import heapq\n\ndef top3(xs):\n    return heapq.nlargest(3, xs)\n")
    assert result.mismatch is None and result.problem is None
    assert result.functions["top3"]["calls"] == result.functions["top3"]["checked"] == 2
    assert behaviour(result.functions) == "calls compared with the original's: 2 of top3"


def test_a_candidate_that_mutates_its_argument_is_caught(tmp_path):
    result = check(tmp_path, {**PKG, "pkg/calc.py": TOP3, "tests/test_calc.py": WEAK_TOP3_TESTS},
                   "top3", "def top3(xs):\n    xs.sort(reverse=True)\n    return xs[:3]\n")
    assert result.mismatch.endswith("left argument 0 as [5, 4, 3, 2, 1] where the original left [5, 1, 4, 2, 3]")


MEAN = "def mean(xs):\n    if not xs:\n        raise ValueError('mean of nothing')\n    return sum(xs) / len(xs)\n"
WEAK_MEAN_TESTS = (
    "import pytest\n"
    "from pkg.calc import mean\n"
    "def test_mean():\n"
    "    assert mean([0.1] * 10) == pytest.approx(0.1)\n"
    "def test_empty():\n"
    "    with pytest.raises(Exception):\n"
    "        mean([])\n")


@pytest.mark.parametrize("candidate, found", [
    ("def mean(xs):\n    return sum(xs) / len(xs)\n",
     "raised ZeroDivisionError: division by zero where the original raised ValueError: mean of nothing"),
    ("def mean(xs):\n    if not xs:\n        raise ValueError('empty')\n    return sum(xs) / len(xs)\n",
     "raised ValueError: empty where the original raised ValueError: mean of nothing"),
])
def test_a_different_exception_type_or_message_is_caught(tmp_path, candidate, found):
    result = check(tmp_path, {**PKG, "pkg/calc.py": MEAN, "tests/test_calc.py": WEAK_MEAN_TESTS}, "mean", candidate)
    assert result.mismatch == f"call 2 of mean, mean([]): {found}"


def test_floats_within_a_tolerance_are_the_same(tmp_path):
    assert sum([0.1] * 10) / 10 != math.fsum([0.1] * 10) / 10  # the candidate's result is not bit-identical
    candidate = MEAN.replace("import", "").replace("return sum(xs)", "return math.fsum(xs)")
    result = check(tmp_path, {**PKG, "pkg/calc.py": MEAN, "tests/test_calc.py": WEAK_MEAN_TESTS},
                   "mean", "import math\n\n" + candidate)
    assert result.mismatch is None and result.functions["mean"]["checked"] == 2


ACCOUNT = (
    "from dataclasses import dataclass, field\n"
    "@dataclass\n"
    "class Account:\n"
    "    balance: int = 0\n"
    "    history: list = field(default_factory=list)\n"
    "    def deposit(self, amount):\n"
    "        self.history.append(amount)\n"
    "        self.balance += amount\n"
    "        return self.balance\n")


def test_a_method_that_leaves_self_different_is_caught(tmp_path):
    files = {**PKG, "pkg/calc.py": ACCOUNT, "tests/test_calc.py": (
        "from pkg.calc import Account\n"
        "def test_deposit():\n"
        "    assert Account().deposit(5) == 5\n")}
    result = check(tmp_path, files, "Account.deposit", ACCOUNT.replace("        self.history.append(amount)\n", ""))
    assert result.mismatch == ("call 1 of Account.deposit, Account.deposit(5): left self as "
                               "Account(balance=5, history=[]) where the original left Account(balance=5, history=[5])")


# A parse tree whose nodes point to their parents, as a real parser's tokens do: pickling a call's arguments
# took the whole tree with it; deep copies keep the links, and the comparison follows them without looping.
TREE = '''\
class Node:
    def __init__(self, value, parent=None):
        self.value, self.parent, self.children = value, parent, []
        if parent is not None:
            parent.children.append(self)

    def __repr__(self):
        return f"Node({self.value!r})"


def build(values):
    root = Node("root")
    for value in values:
        Node(value, root)
    return root


class Walker:
    def leaves(self, node):
        """Every value under node, depth first, and mark each node visited."""
        found = []
        for child in node.children:
            child.visited = True
            found.append(child.value)
            found.extend(self.leaves(child))
        return found

    def flat(self, node):
        for child in node.children:
            yield child.value
            yield from self.flat(child)
'''
TREE_TESTS = '''\
from pkg.calc import Walker, build


def test_leaves():
    tree = build("abc")
    assert len(Walker().leaves(tree)) == 3  # weak: the length only


def test_flat():
    assert len(list(Walker().flat(build("xyz")))) == 3
'''


def test_parent_linked_trees_are_copied_and_compared(tmp_path):
    files = {**PKG, "pkg/calc.py": TREE, "tests/test_calc.py": TREE_TESTS}
    same_ = TREE.replace("found.append(child.value)\n            found.extend(self.leaves(child))",
                         "found += [child.value, *self.leaves(child)]")
    result = check(tmp_path / "same", files, "Walker.leaves", same_)
    assert result.mismatch is None and result.functions["Walker.leaves"]["checked"] == 1
    # Forgets to mark the nodes: the result is the same, the tree it leaves is not.
    unmarked = TREE.replace("            child.visited = True\n", "")
    result = check(tmp_path / "unmarked", files, "Walker.leaves", unmarked)
    assert result.mismatch.startswith("call 1 of Walker.leaves, Walker.leaves(Node('root')): left argument 1 as Node('root')")


@pytest.mark.parametrize("candidate, found", [
    # Breadth first: the same items, in another order.
    ("        for child in node.children:\n            yield child.value\n        for child in node.children:\n"
     "            yield from self.flat(child)\n", None),
    ("        yield from (c.value for c in reversed(node.children))\n", "yielded ['z', 'y', 'x'] where the original yielded ['x', 'y', 'z']"),
    ("        while True:\n            yield 'x'\n", "yielded ['x', 'x', 'x', "),
])
def test_a_generator_is_compared_by_the_items_it_yields(tmp_path, candidate, found):
    files = {**PKG, "pkg/calc.py": TREE, "tests/test_calc.py": TREE_TESTS.replace(
        "len(list(Walker().flat(build(\"xyz\"))))", "sum(1 for _, v in zip(range(3), Walker().flat(build(\"xyz\"))))")}
    body = "        for child in node.children:\n            yield child.value\n            yield from self.flat(child)\n"
    result = check(tmp_path, files, "Walker.flat", TREE.replace(body, candidate))
    if found is None:
        assert result.mismatch is None and result.functions["Walker.flat"]["checked"] == 1
    else:
        assert found in result.mismatch
    if "while True" in candidate:
        assert result.mismatch.endswith("and more where the original yielded ['x', 'y', 'z']")
        assert str(MAX_ITEMS) not in result.mismatch  # the items are shown short


def test_a_function_that_returns_an_inner_generator_is_compared_by_its_items(tmp_path):
    original = ("def evens(xs):\n    def gen():\n        for x in xs:\n            if x % 2 == 0:\n"
                "                yield x\n    return gen()\n")
    tests = "from pkg.calc import evens\ndef test_evens():\n    assert next(evens([1, 2, 3, 4])) == 2\n"
    files = {**PKG, "pkg/calc.py": original, "tests/test_calc.py": tests}
    good = check(tmp_path / "good", files, "evens", "def evens(xs):\n    return (x for x in xs if x % 2 == 0)\n")
    assert good.mismatch is None and good.functions["evens"]["checked"] == 1
    bad = check(tmp_path / "bad", files, "evens", "def evens(xs):\n    return (x for x in xs[:2] if x % 2 == 0)\n")
    assert bad.mismatch == "call 1 of evens, evens([1, 2, 3, 4]): yielded [2] where the original yielded [2, 4]"


def test_arguments_that_cannot_be_copied_fall_back_to_the_tests_and_say_so(tmp_path):
    files = {**PKG, "pkg/calc.py": "def first_line(stream):\n    return stream.readline()\n", "tests/test_calc.py": (
        "from pkg.calc import first_line\n"
        "def test_first_line(tmp_path):\n"
        "    (tmp_path / 'f').write_text('a\\nb\\n')\n"
        "    with open(tmp_path / 'f') as stream:\n"
        "        assert first_line(stream) == 'a\\n'\n")}
    result = check(tmp_path, files, "first_line", "def first_line(stream):\n    line = stream.readline()\n    return line\n")
    tally = result.functions["first_line"]
    assert result.mismatch is None and (tally["checked"], tally["uncopyable"]) == (0, 1)
    assert behaviour(result.functions) == ("checked by the tests alone: its arguments cannot be deep-copied "
                                           "(TypeError: cannot pickle '_io.TextIOWrapper' object)")


def test_a_call_whose_arguments_hold_100_mb_is_not_copied(tmp_path):
    files = {**PKG, "pkg/calc.py": "def size(blob):\n    return len(blob)\n", "tests/test_calc.py": (
        "from pkg.calc import size\n"
        "def test_size():\n"
        "    assert size(bytes(100 * 2**20)) == 100 * 2**20\n"
        "    assert size(b'abc') == 3\n")}
    result = check(tmp_path, files, "size", "def size(blob):\n    n = len(blob)\n    return n\n")
    tally = result.functions["size"]
    assert (tally["checked"], tally["too_big"]) == (1, 1) and result.mismatch is None
    assert behaviour(result.functions) == ("calls compared with the original's: 1 of size; 1 not compared, as its "
                                           "arguments hold over 64 MiB or 200000 objects")


def test_a_call_that_depends_on_chance_is_set_aside_not_held_against_the_candidate(tmp_path):
    original = "import random\n\ndef noisy(x):\n    return x + random.random()\n"
    files = {**PKG, "pkg/calc.py": original,
             "tests/test_calc.py": "from pkg.calc import noisy\ndef test_noisy():\n    assert noisy(1) >= 1\n"}
    result = check(tmp_path, files, "noisy", original.replace("x + random.random()", "random.random() + x"))
    assert result.mismatch is None and result.functions["noisy"]["unreproducible"] == 1


@pytest.mark.parametrize("candidate, found", [
    ("CACHE = []\n\ndef total(xs):\n    CACHE.append(xs)\n    return sum(xs)\n", "changed CACHE, which the original leaves alone"),
    ("CACHE = []\n\ndef total(xs):\n    global CACHE\n    CACHE = list(xs)\n    return sum(xs)\n", "changed CACHE"),
])
def test_a_candidate_that_changes_a_global_the_original_leaves_alone_is_caught(tmp_path, candidate, found):
    files = {**PKG, "pkg/calc.py": "CACHE = []\n\ndef total(xs):\n    return sum(xs)\n",
             "tests/test_calc.py": "from pkg.calc import total\ndef test_total():\n    assert total([1, 2]) == 3\n"}
    result = check(tmp_path, files, "total", candidate)
    assert result.mismatch is not None and found in result.mismatch


def test_a_candidate_that_changes_a_class_attribute_is_caught(tmp_path):
    original = "class Counter:\n    seen = []\n\n    def count(self, xs):\n        return len(xs)\n"
    files = {**PKG, "pkg/calc.py": original, "tests/test_calc.py": (
        "from pkg.calc import Counter\ndef test_count():\n    assert Counter().count([1, 2]) == 2\n")}
    result = check(tmp_path, files, "Counter.count", original.replace("return len(xs)", "Counter.seen.append(1)\n        return len(xs)"))
    assert result.mismatch.endswith("changed Counter.seen, which the original leaves alone")


KINDS = '''\
import functools


class Base:
    def scale(self, x):
        return 2 * x


class Shape(Base):
    sides = 4

    def scale(self, x):
        return super().scale(x) + 1

    @staticmethod
    def double(x):
        return x * 2

    @classmethod
    def make(cls, n):
        return [cls.sides] * n

    @property
    def area(self):
        return self.sides ** 2

    async def later(self, x):
        return x + 1


@functools.lru_cache(maxsize=None)
def squares(n):
    return tuple(i * i for i in range(n))
'''
KINDS_TESTS = '''\
import asyncio
from pkg.calc import Shape, squares


def test_kinds():
    shape = Shape()
    assert shape.scale(1) > 0 and Shape.double(2) > 0 and Shape.make(2) and shape.area > 0
    assert asyncio.run(shape.later(1)) > 0 and len(squares(3)) == 3
'''


@pytest.mark.parametrize("qualname, old, new", [
    ("Shape.scale", "return super().scale(x) + 1", "return super().scale(x) + 2"),
    ("Shape.double", "return x * 2", "return x * 3"),
    ("Shape.make", "return [cls.sides] * n", "return [cls.sides] * (n + 1)"),
    ("Shape.area", "return self.sides ** 2", "return self.sides * 3"),
    ("Shape.later", "return x + 1", "return x + 2"),
    ("squares", "tuple(i * i for i in range(n))", "tuple(i * 2 for i in range(n))"),
])
def test_every_kind_of_function_is_checked(tmp_path, qualname, old, new):
    files = {**PKG, "pkg/calc.py": KINDS, "tests/test_calc.py": KINDS_TESTS}
    result = check(tmp_path, files, qualname, KINDS.replace(old, new))
    assert result.mismatch is not None and result.mismatch.startswith(f"call 1 of {qualname}, "), result.mismatch


def test_a_method_using_super_is_loaded_beside_the_candidate_and_compared(tmp_path):
    files = {**PKG, "pkg/calc.py": KINDS, "tests/test_calc.py": KINDS_TESTS}
    result = check(tmp_path, files, "Shape.scale", KINDS.replace("return super().scale(x) + 1", "return 2 * x + 1"))
    assert result.mismatch is None and result.functions["Shape.scale"]["checked"] == 1


def test_only_the_first_calls_and_a_spread_after_are_checked(tmp_path):
    fib = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
    files = {**PKG, "pkg/calc.py": fib, "tests/test_calc.py": (
        "from pkg.calc import fib\n"
        "def test_many():\n"
        "    assert all(fib(5) == 5 for _ in range(1100))\n")}
    result = check(tmp_path, files, "fib", "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n")
    tally = result.functions["fib"]
    # 1100 outermost calls (the recursive ones are part of their behaviour): the first 200, then 256, 512, 1024.
    assert (tally["calls"], tally["checked"]) == (1100, MAX_SAMPLED + 3)


def test_tests_that_never_call_the_target_say_so(tmp_path):
    files = {**PKG, "pkg/calc.py": TOP3 + "def other():\n    return 1\n",
             "tests/test_calc.py": "from pkg.calc import other\ndef test_other():\n    assert other() == 1\n"}
    result = check(tmp_path, files, "top3", files["pkg/calc.py"])
    assert result.functions["top3"]["calls"] == 0


@pytest.mark.parametrize("candidate, problem", [
    ("def sum_all(xs):\n    return sum(xs)\n", "pkg.calc defines no total"),
])
def test_a_candidate_without_the_target_is_one_line_not_a_crash(tmp_path, candidate, problem):
    make_repo(tmp_path, {**PKG, "tests/test_calc.py": "import pkg.calc\ndef test_it():\n    assert pkg.calc\n"})
    with Sandbox(tmp_path) as sandbox:
        sandbox.write("pkg/calc.py", candidate)
        result = verify(sandbox, "pkg/calc.py", "total", ["tests"], PKG["pkg/calc.py"], None, [], LIMIT_S, 0)
    assert result.problem == problem


SLOW_TOTAL = "def total(xs):\n    t = 0\n    for x in xs:\n        t = t + sum([x] * 200) // 200\n    return t\n"
RACE_TESTS = ("import pytest\n"
              "from pkg.calc import total\n"
              "@pytest.fixture\n"
              "def numbers(tmp_path):\n    return list(range(3000))\n"
              "def test_big(numbers):\n    assert total(numbers) > 0\n"
              "def test_small():\n    assert total([1, 2]) == 3\n")


def test_the_race_times_the_regressed_tests_with_the_best_and_the_candidate_in_turn(tmp_path):
    files = {**PKG, "pkg/calc.py": SLOW_TOTAL, "tests/test_calc.py": RACE_TESTS}
    fast = "def total(xs):\n    t = 0\n    for x in xs:\n        t = t + x\n    return t\n"
    result = check(tmp_path, files, "total", fast, race=["tests/test_calc.py::test_big"])
    race = result.race
    assert result.mismatch is None and result.raced == ["tests/test_calc.py::test_big"]
    assert 5 <= len(race["time_s"]["champion"]) == len(race["time_s"]["challenger"]) <= 9
    # Far beyond the noise: 200-element lists summed per item against one addition.
    assert statistics.median(race["time_s"]["challenger"]) < statistics.median(race["time_s"]["champion"]) / 5
    assert set(race["peak_mb"]) == {"champion", "challenger"}


def test_the_race_runs_the_best_version_not_the_original(tmp_path):
    files = {**PKG, "pkg/calc.py": SLOW_TOTAL, "tests/test_calc.py": RACE_TESTS}
    fast = "def total(xs):\n    return sum(xs)\n"
    # The candidate is the tree's text; the best so far is the fast one: the candidate loses.
    result = check(tmp_path, files, "total", SLOW_TOTAL.replace("t = t +", "t +="), race=["tests/test_calc.py::test_big"],
                   champion=fast)
    assert statistics.median(result.race["time_s"]["champion"]) < statistics.median(result.race["time_s"]["challenger"]) / 5


def test_a_wrong_candidate_is_not_raced(tmp_path):
    files = {**PKG, "pkg/calc.py": SLOW_TOTAL, "tests/test_calc.py": RACE_TESTS}
    wrong = "def total(xs):\n    return sum(xs) + (len(xs) > 100)\n"  # off by one on long lists: the tests miss it
    result = check(tmp_path, files, "total", wrong, race=["tests/test_calc.py::test_big"])
    assert result.mismatch is not None and result.race is None


# --- comparing results ---------------------------------------------------------------------------------------


class Opaque:
    """A class that leaves == to identity: compared by its state."""

    def __init__(self, value):
        self.value = value


class Slotted:
    __slots__ = ("a",)

    def __init__(self, a):
        self.a = a


def test_same_compares_values_as_results():
    assert same([1, (2.0, {"a": {0.1 + 0.2}})], [1, (2.0, {"a": {0.3}})])  # floats close, even inside a set
    assert not same([0.3], [0.3001])
    assert same(float("nan"), float("nan")) and not same(float("nan"), 0.0)
    assert not same(3, 3.0) and not same(True, 1) and not same([1], (1,))
    assert not same({"a": 1}, {"a": 1, "b": 2}) and not same({1, 2}, {1, 3})
    assert same(Opaque([1, 2]), Opaque([1, 2])) and not same(Opaque([1, 2]), Opaque([2, 1]))
    assert same(Slotted(1), Slotted(1)) and not same(Slotted(1), Slotted(2))
    looped = [1]
    looped.append(looped)
    assert not same(looped, [1, [1, 2]])
    other = [1]
    other.append(other)
    assert same(looped, other)  # two cycles of the same shape: compared without looping


def test_module_level_objects_are_shared_by_the_copies_not_copied(tmp_path):
    # Token types compared by identity, as a real lexer's are: a deep copy of a token must keep its type.
    original = ("class Kind:\n    def __init__(self, name):\n        self.name = name\n\n"
                "KEYWORD, NAME = Kind('keyword'), Kind('name')\n\n"
                "class Token:\n    def __init__(self, kind, text):\n        self.kind, self.text = kind, text\n\n"
                "def keywords(tokens):\n    return [t.text for t in tokens if t.kind is KEYWORD]\n")
    tests = ("from pkg.calc import KEYWORD, NAME, Token, keywords\n"
             "def test_keywords():\n"
             "    assert len(keywords([Token(KEYWORD, 'select'), Token(NAME, 'x')])) == 1\n")
    files = {**PKG, "pkg/calc.py": original, "tests/test_calc.py": tests}
    result = check(tmp_path, files, "keywords", original.replace("[t.text for t in tokens if t.kind is KEYWORD]",
                                                                  "[t.text for t in tokens if KEYWORD is t.kind]"))
    assert result.mismatch is None and result.functions["keywords"]["checked"] == 1


def test_a_deepcopy_that_registers_itself_by_id_keeps_its_cycles_and_the_shared_objects(tmp_path):
    # As PyTorch's tensors do, a __deepcopy__ that puts its copy in the memo under id(self); the check's copies
    # key the memo by address without id() (see verify.pytest_configure): both must meet, in a parent-linked
    # tree, and a module-level object reached through copy.deepcopy must stay itself.
    original = ("import copy\n\nclass Kind:\n    pass\n\nKEYWORD, NAME = Kind(), Kind()\n\n"
                "class Node:\n"
                "    def __init__(self, kind, children=()):\n"
                "        self.kind, self.children, self.parent = kind, list(children), None\n"
                "        for child in self.children:\n"
                "            child.parent = self\n\n"
                "    def __deepcopy__(self, memo):\n"
                "        if id(self) in memo:\n"
                "            return memo[id(self)]\n"
                "        twin = memo[id(self)] = Node.__new__(Node)\n"
                "        twin.kind = copy.deepcopy(self.kind, memo)\n"
                "        twin.children = [copy.deepcopy(child, memo) for child in self.children]\n"
                "        twin.parent = copy.deepcopy(self.parent, memo)\n"
                "        return twin\n\n"
                "def keywords(node):\n    return sum(1 for child in node.children if child.kind is KEYWORD)\n")
    tests = ("from pkg.calc import KEYWORD, NAME, Node, keywords\n"
             "def test_keywords():\n"
             "    assert keywords(Node(NAME, [Node(KEYWORD), Node(NAME, [Node(KEYWORD)])])) == 1\n")
    files = {**PKG, "pkg/calc.py": original, "tests/test_calc.py": tests}
    result = check(tmp_path, files, "keywords", original.replace(
        "return sum(1 for child in node.children if child.kind is KEYWORD)",
        "return [KEYWORD is child.kind for child in node.children].count(True)"))
    assert result.mismatch is None and result.functions["keywords"]["checked"] == 1, result.functions


# A decorator that registers what it wraps and refuses a second function of a name, as networkx's
# @_dispatchable does: the original runs as the tree's own function with its code swapped in, so no
# decorator runs twice, and calls through the registry run whichever version is in.
REGISTERED = '''\
import functools

REGISTRY = {}


def register(f):
    if f.__name__ in REGISTRY:
        raise KeyError(f"already registered: {f.__name__}")

    @functools.wraps(f)
    def wrapper(*args):
        return f(*args)

    REGISTRY[f.__name__] = wrapper
    return wrapper


@register
def spread(n):
    return sum(sum([i] * 300) // 300 for i in range(n))
'''
REGISTERED_TESTS = '''\
from pkg.calc import REGISTRY, spread


def test_direct():
    assert spread(3) > 0  # weak


def test_through_the_registry():
    assert REGISTRY["spread"](2000) > 0
'''


def test_a_registering_decorator_does_not_run_twice_and_calls_through_the_registry_are_raced(tmp_path):
    files = {**PKG, "pkg/calc.py": REGISTERED, "tests/test_calc.py": REGISTERED_TESTS}
    fast = REGISTERED.replace("sum(sum([i] * 300) // 300 for i in range(n))", "sum(range(n))")
    result = check(tmp_path, files, "spread", fast, race=["tests/test_calc.py::test_through_the_registry"])
    assert result.problem is None and result.mismatch is None and result.functions["spread"]["checked"] == 1
    # The registry holds the decorator's wrapper around the tree's function: the original's code ran there.
    times = result.race["time_s"]
    assert statistics.median(times["challenger"]) < statistics.median(times["champion"]) / 5
    wrong = REGISTERED.replace("// 300 for", "// 300 + 1 for")
    assert check(tmp_path / "wrong", files, "spread", wrong).mismatch == (
        "call 1 of spread, spread(3): returned 6 where the original returned 3")


def test_with_the_calls_counted_the_check_spreads_over_the_whole_run_and_every_test(tmp_path):
    # The candidate differs only on the last of 3000 calls: the first 200 and the powers of two miss it; a
    # spread over the counted calls, with each test's first call, does not.
    original = "def sign(x):\n    return (x > 0) - (x < 0)\n"
    tests = ("from pkg.calc import sign\n"
             "def test_many():\n    assert all(sign(i) >= 0 for i in range(2999))\n"
             "def test_last():\n    assert sign(-5) <= 0\n")
    files = {**PKG, "pkg/calc.py": original, "tests/test_calc.py": tests}
    wrong = "def sign(x):\n    return 1 if x > 0 else (0 if x >= -4 else -2)\n"
    make_repo(tmp_path, files)
    with Sandbox(tmp_path) as sandbox:
        sandbox.write("pkg/calc.py", wrong)
        front = verify(sandbox, "pkg/calc.py", "sign", ["tests"], original, None, [], LIMIT_S, 0)
        spread = verify(sandbox, "pkg/calc.py", "sign", ["tests"], original, None, [], LIMIT_S, 0,
                        expected_calls={"sign": 3000})
    assert front.run.status == spread.run.status == "passed"
    assert front.mismatch is None and front.functions["sign"]["checked"] == MAX_SAMPLED + 4
    assert spread.mismatch == "call 3000 of sign, sign(-5): returned -2 where the original returned -1"
