"""The prompt the model gets: the module context its target needs, and the round's request."""

import textwrap

from pytest_soap.soap import Related, prompt
from pytest_soap.soap.profile import LineCost, OverheadProfile
from pytest_soap.soap.prompt import SYSTEM, Rejected, build, module_context

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


# --- the regression as a unit -----------------------------------------------------------------------------

PARSER = textwrap.dedent('''\
    import re

    from .lexer import tokenize

    LIMIT = 100


    def parse_header(line):
        """Reads a header line."""
        return line.split(":")


    class Parser:
        """Parses tokens into a tree."""

        WORD = re.compile(r"\\w+")
        DEPTH = 10
        UNSEEN = 3

        def _advance(self):
            """Moves one token on."""
            tokens = list(tokenize(self.text))
            self.pos += 1
            return tokens[self.pos - 1]

        def _peek(self):
            """Looks at the next token."""
            return None

        def other(self):
            return 1

        def parse(self):
            out = []
            while self.pos < LIMIT and len(out) < self.DEPTH:
                tok = self._advance()
                if self.WORD.match(tok):
                    out.append(tok)
                self._peek()
            return out
''')
ADVANCE_BODY = "        tokens = list(tokenize(self.text))\n"


def hot_profile(qualname="Parser.parse", text="tok = self._advance()", share=0.99):
    lineno = next(i for i, line in enumerate(PARSER.splitlines(), 1) if text in line)
    return OverheadProfile("pkg/parser.py", qualname, 1, 10, 1.0, 0.5,
                           [LineCost(lineno, text, 10, share, share, 0.0)])


def parse_prompt(related=(), profile=None, root=None, best=None):
    return build("pkg/parser.py", "Parser.parse", PARSER, ["tests/test_p.py::test_parse"], "", "time 2.3x",
                 best, None, [], related=related, root=root, profile=profile)


def test_a_method_shows_its_class_header_the_attributes_it_uses_and_the_methods_it_calls():
    fixed, _ = parse_prompt()
    assert 'class Parser:\n    """Parses tokens into a tree."""\n    WORD = re.compile' in fixed
    assert "    DEPTH = 10\n" in fixed and "UNSEEN" not in fixed  # only the attributes it uses
    assert '    def _advance(self):\n        """Moves one token on."""\n        ...\n' in fixed  # signatures
    assert '    def _peek(self):\n' in fixed and "def other" not in fixed  # of the methods it calls only
    assert ADVANCE_BODY not in fixed and "left out" not in fixed
    assert "LIMIT = 100" in fixed and "def parse_header" not in fixed


def test_the_callee_holding_the_target_s_time_is_shown_whole():
    fixed, request = parse_prompt(profile=hot_profile())
    assert "    # 99% of the target's time is on lines that use it; shown for reference, not to be revised\n" \
           "    def _advance(self):\n" + '        """Moves one token on."""\n' + ADVANCE_BODY in fixed
    assert "    # the target\n    def parse(self):" in fixed
    assert "def _peek(self):\n        \"\"\"Looks at the next token.\"\"\"\n        ...\n" in fixed  # a cool line
    assert "You may revise" not in request


def test_a_profile_of_another_function_or_cool_lines_shows_nothing_more():
    for profile in (hot_profile(qualname="Parser.other"), hot_profile(share=0.05)):
        assert ADVANCE_BODY not in parse_prompt(profile=profile)[0]


def test_related_functions_of_the_module_are_shown_by_their_share_and_offered_for_revision():
    related = (Related("pkg/parser.py", "Parser._advance", 0.62, True), Related("pkg/parser.py", "parse_header", 0.01))
    fixed, request = parse_prompt(related)
    assert "    # 62% of the regression (changed); you may revise it\n    def _advance(self):\n" in fixed
    assert ADVANCE_BODY in fixed
    assert ('# 1% of the regression; you may revise it\ndef parse_header(line):\n    """Reads a header line."""\n'
            "    ...\n") in fixed  # under 3%: its signature only
    assert request.endswith("You may revise Parser._advance, parse_header with it, in the same block.")


def test_a_nested_related_function_is_shown_through_the_function_that_defines_it():
    fixed, _ = parse_prompt((Related("pkg/parser.py", "parse_header.<locals>.split", 0.2, True),
                             Related("pkg/parser.py", "Parser.parse.<locals>.gen", 0.5, True)))
    assert "# 20% of the regression (changed); you may revise it\ndef parse_header(line):" in fixed
    assert 'return line.split(":")' in fixed and "<locals>" not in fixed


def test_related_functions_of_other_modules_come_from_the_root_for_reference(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "lexer.py").write_text('def tokenize(text):\n    """Splits."""\n    yield from text.split()\n')
    related = (Related("pkg/lexer.py", "tokenize", 0.6), Related("pkg/gone.py", "lost", 0.3),
               Related("pkg/_speedups.so", "scan", 0.2))
    fixed, request = parse_prompt(related, root=tmp_path)
    assert ("in other modules (for reference: the reply cannot change them):\n\n```python\n"
            "# pkg/lexer.py::tokenize: 60% of the regression\n"
            'def tokenize(text):\n    """Splits."""\n    yield from text.split()\n\n'
            "# pkg/gone.py::lost: 30% of the regression (its source is not available)\n```") in fixed
    assert "_speedups" not in fixed and "You may revise" not in request


def test_over_the_budget_the_least_important_sources_shrink_to_signatures(monkeypatch):
    related = (Related("pkg/parser.py", "Parser._advance", 0.62, True), Related("pkg/parser.py", "parse_header", 0.2))
    fixed, _ = parse_prompt(related)
    assert ADVANCE_BODY in fixed and 'return line.split(":")' in fixed
    monkeypatch.setattr(prompt, "BUDGET", len(fixed) - 1)
    fixed, request = parse_prompt(related)
    assert ADVANCE_BODY in fixed and 'return line.split(":")' not in fixed  # the lighter one shrank
    assert 'def parse_header(line):\n    """Reads a header line."""\n    ...\n' in fixed
    monkeypatch.setattr(prompt, "BUDGET", 10)
    fixed, request = parse_prompt(related)
    assert ADVANCE_BODY not in fixed and "    def parse(self):\n        out = []\n" in fixed  # the target stays whole
    assert "You may revise Parser._advance, parse_header" in request  # still revisable


def test_the_context_is_the_same_whatever_order_the_related_functions_come_in():
    related = [Related("pkg/parser.py", "Parser._advance", 0.3, True), Related("pkg/parser.py", "parse_header", 0.3),
               Related("pkg/parser.py", "Parser._peek", 0.01)]
    assert parse_prompt(related, hot_profile()) == parse_prompt(related[::-1], hot_profile())


def test_the_request_offers_the_revisable_functions_in_later_rounds_too():
    _, request = parse_prompt((Related("pkg/parser.py", "Parser._advance", 0.62, True),), best="def parse(self):\n    return []")
    assert "Improve on it, with identical behaviour. You may revise Parser._advance with it" in request
    system = " ".join(SYSTEM.split())
    assert '"you may revise it"' in system and "any of the revisable functions you change" in system
    assert "New helper functions, methods and imports may stand in the same block under new names" in system


def test_a_property_getter_target_is_shown_not_its_setter():
    from test_candidate import KINDS  # tests/test_candidate.py: one of every kind of function

    context = module_context(KINDS, "Box.items")
    assert context.endswith("    @property\n    def items(self):\n        return sorted(self._items)")
    assert "setter" not in context
