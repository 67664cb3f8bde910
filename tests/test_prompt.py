"""The prompt the model gets: the module context its target needs, and the round's request."""

import textwrap

from pytest_soap.soap.prompt import Rejected, build, module_context

MODULE = textwrap.dedent('''\
    """A module."""
    import math
    from collections import Counter

    LIMIT = 10
    UNUSED = 3


    class Point:
        x: float
        y: float


    def helper(values):
        """Squares, summed."""
        return sum(v * v for v in values)


    def unrelated():
        return "not shown"


    def norm(points):
        return math.sqrt(helper([p.x for p in points][:LIMIT]))


    class Store:
        def other(self):
            return 1

        def total(self, items):
            return Counter(items)
''')


def test_the_context_holds_what_the_target_uses_and_not_the_rest():
    context = module_context(MODULE, "norm")
    assert "import math" in context and "from collections import Counter" in context
    assert "LIMIT = 10" in context and "UNUSED" not in context
    assert '    """Squares, summed."""' in context and "return sum(" not in context  # a helper's outline only
    assert "unrelated" not in context
    assert context.rstrip().endswith("return math.sqrt(helper([p.x for p in points][:LIMIT]))")


def test_a_method_comes_with_its_class_line_and_not_its_siblings():
    context = module_context(MODULE, "Store.total")
    assert "class Store:" in context and "def total(self, items):" in context
    assert "def other" not in context


def test_later_rounds_carry_the_best_code_its_profile_and_the_rejections():
    fixed, first = build("pkg/m.py", "norm", MODULE, ["tests/test_m.py::test_norm"], "PROFILE-0", "time 2.0x",
                         None, None, [])
    assert "PROFILE-0" in fixed and "tests/test_m.py::test_norm" in fixed and "time 2.0x" in fixed
    assert "best revision" not in first
    _, later = build("pkg/m.py", "norm", MODULE, ["tests/test_m.py::test_norm"], "PROFILE-0", "time 2.0x",
                     "def norm(points):\n    return 0.0", "PROFILE-2",
                     [Rejected(2, "tests failed: test_norm"), Rejected(3, "the reply has no ```python block")])
    assert "def norm(points):\n    return 0.0" in later and "PROFILE-2" in later
    assert "round 2: tests failed: test_norm" in later and "round 3: the reply has no" in later


def test_without_a_profile_neither_round_mentions_one_and_a_task_leads_the_context():
    fixed, _ = build("solution.py", "norm", MODULE, ["test_public.py::test_public"], "", "ET 2 ms", None, None, [],
                     task="Task: problem 7 (norms).")
    assert fixed.startswith("Task: problem 7 (norms).\n\nThe target is `norm`")
    assert "profile" not in fixed.lower()
    _, later = build("solution.py", "norm", MODULE, [], "", "ET 2 ms", "def norm(points):\n    return 0.0", "", [])
    assert "def norm(points):\n    return 0.0" in later and "profile" not in later.lower()
