"""changes: which functions differ between a commit and the working tree, on real git repositories."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import git
import pytest

from pytest_soap.changes import ChangeSet, FunctionChange, changed_functions, definitions, qualname_at


def write(root: Path, files: dict[str, str | bytes | None]) -> None:
    """Writes each file (dedented), or removes it when its content is None."""
    for name, content in files.items():
        path = root / name
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))


def commit(repo: git.Repo, files: dict[str, str | bytes | None], message: str = "change") -> str:
    write(Path(repo.working_tree_dir), files)
    repo.git.add("-A")
    repo.git.commit("-q", "-m", message)
    return repo.head.commit.hexsha


@pytest.fixture
def repo(tmp_path: Path) -> git.Repo:
    repo = git.Repo.init(tmp_path)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Test")
        config.set_value("user", "email", "test@example.com")
        config.set_value("commit", "gpgsign", "false")
    return repo


def kinds(changes: ChangeSet) -> dict[tuple[str, str], str]:
    assert changes.note is None, changes.note
    return {(f.file, f.qualname): f.kind for f in changes.functions}


def after(repo: git.Repo, base: dict, edits: dict, ref: str = "HEAD") -> ChangeSet:
    """Commits `base`, then edits the working tree without committing, and lists what changed since `ref`."""
    commit(repo, base, "base")
    write(Path(repo.working_tree_dir), edits)
    return changed_functions(Path(repo.working_tree_dir), ref)


SHAPES = """\
import functools


class Shape:
    \"\"\"A shape.\"\"\"

    def area(self):
        return 0

    def name(self):
        return "shape"


def outer(x):
    def inner(y):
        return y + 1
    return inner(x) * 2


@functools.lru_cache(maxsize=None)
def cached(n):
    return n * n


@functools.lru_cache(maxsize=None)
def decorated(n):
    return n + n
"""


def test_a_modified_method_is_listed_under_its_class_and_nothing_else(repo):
    changes = after(repo, {"shapes.py": SHAPES}, {"shapes.py": SHAPES.replace("return 0", "return 1")})
    assert kinds(changes) == {("shapes.py", "Shape.area"): "modified"}
    assert changes.functions[0] == FunctionChange("shapes.py", "Shape.area", 7, "modified")
    assert changes.changed("shapes.py", "Shape.area")
    assert not changes.changed("shapes.py", "Shape.name")
    assert changes.ref == repo.head.commit.hexsha


def test_a_change_inside_a_nested_function_is_the_inner_functions_not_the_outer(repo):
    changes = after(repo, {"shapes.py": SHAPES}, {"shapes.py": SHAPES.replace("y + 1", "y + 2")})
    assert kinds(changes) == {("shapes.py", "outer.<locals>.inner"): "modified"}
    # and the outer's own code changing leaves the inner alone
    write(Path(repo.working_tree_dir), {"shapes.py": SHAPES.replace("* 2", "* 3")})
    changes = changed_functions(Path(repo.working_tree_dir), "HEAD")
    assert kinds(changes) == {("shapes.py", "outer"): "modified"}


def test_a_decorated_functions_body_or_decorator_changing_is_a_modification(repo):
    edited = SHAPES.replace("n * n", "n ** 2").replace(
        "@functools.lru_cache(maxsize=None)\ndef decorated", "@functools.lru_cache(maxsize=128)\ndef decorated")
    changes = after(repo, {"shapes.py": SHAPES}, {"shapes.py": edited})
    assert kinds(changes) == {("shapes.py", "cached"): "modified", ("shapes.py", "decorated"): "modified"}
    assert [f.lineno for f in changes.functions] == [21, 26]  # the def lines, not the decorators'


def test_a_comment_docstring_or_whitespace_edit_is_not_a_change(repo):
    edited = (SHAPES.replace("def area(self):\n", 'def area(self):\n        """The area."""\n\n')
              .replace("return y + 1", "return y+1  # one more")
              .replace('"""A shape."""', '"""A shape, now documented."""'))
    changes = after(repo, {"shapes.py": SHAPES}, {"shapes.py": edited})
    assert changes.functions == []
    assert changes.describe() == f"no functions changed since {repo.head.commit.hexsha[:7]}"


def test_an_added_file_lists_all_its_functions_as_added(repo):
    commit(repo, {"shapes.py": SHAPES}, "base")
    commit(repo, {"pkg/new.py": "def one():\n    pass\n\nasync def two():\n    pass\n"})
    changes = changed_functions(Path(repo.working_tree_dir), "HEAD~1")
    assert kinds(changes) == {("pkg/new.py", "one"): "added", ("pkg/new.py", "two"): "added"}
    assert changes.changed("pkg/new.py", "two")


def test_a_deleted_file_lists_its_functions_as_deleted_at_their_old_lines(repo):
    changes = after(repo, {"shapes.py": SHAPES, "gone.py": "x = 1\n\n\ndef f():\n    pass\n"}, {"gone.py": None})
    assert changes.functions == [FunctionChange("gone.py", "f", 4, "deleted")]
    assert not changes.changed("gone.py", "f")  # gone from the working tree: nothing there to blame


def test_a_renamed_file_lists_only_its_edited_function_under_the_new_path(repo):
    commit(repo, {"shapes.py": SHAPES}, "base")
    repo.git.mv("shapes.py", "geometry.py")
    write(Path(repo.working_tree_dir), {"geometry.py": SHAPES.replace('return "shape"', 'return "Shape"')})
    changes = changed_functions(Path(repo.working_tree_dir), "HEAD")
    assert kinds(changes) == {("geometry.py", "Shape.name"): "modified"}


def test_a_function_moved_unchanged_is_no_change_and_moved_and_edited_is_modified(repo):
    base = {"a.py": "def stays():\n    return 0\n\n\ndef moves():\n    return 1\n\n\ndef edited():\n    return 2\n",
            "b.py": "def other():\n    return 3\n"}
    edits = {"a.py": "def stays():\n    return 0\n",
             "b.py": "def other():\n    return 3\n\n\ndef moves():\n    return 1\n\n\ndef edited():\n    return 20\n"}
    changes = after(repo, base, edits)
    assert kinds(changes) == {("b.py", "edited"): "modified"}
    assert changes.functions[0].lineno == 9


def test_a_file_renamed_without_telling_git_is_settled_as_moves(repo):
    commit(repo, {"shapes.py": SHAPES}, "base")
    (Path(repo.working_tree_dir) / "shapes.py").rename(Path(repo.working_tree_dir) / "figures.py")
    write(Path(repo.working_tree_dir), {"figures.py": SHAPES.replace("n * n", "n ** 2")})
    changes = changed_functions(Path(repo.working_tree_dir), "HEAD")
    assert kinds(changes) == {("figures.py", "cached"): "modified"}  # to git: a deletion and an untracked file


def test_commits_since_the_ref_uncommitted_edits_and_untracked_files_all_count(repo):
    first = commit(repo, {"shapes.py": SHAPES}, "base")
    commit(repo, {"shapes.py": SHAPES.replace("return 0", "return 1")})
    write(Path(repo.working_tree_dir), {
        "shapes.py": SHAPES.replace("return 0", "return 1").replace("n + n", "2 * n"),
        "fresh.py": "class New:\n    def made(self):\n        pass\n",
    })
    changes = changed_functions(Path(repo.working_tree_dir), first)
    assert kinds(changes) == {("shapes.py", "Shape.area"): "modified", ("shapes.py", "decorated"): "modified",
                              ("fresh.py", "New.made"): "added"}
    assert changes.ref == first
    assert changes.describe() == f"3 functions changed since {first[:7]}"


def test_binary_text_and_unparseable_files_are_other_files_not_analysed(repo):
    base = {"shapes.py": SHAPES, "logo.png": b"\x89PNG\x00\x01", "notes.txt": "one\n", "stub.pyi": "def f(): ...\n",
            "broken.py": "def ok():\n    pass\n"}
    edits = {"logo.png": b"\x89PNG\x00\x02", "notes.txt": "two\n", "stub.pyi": "def f() -> int: ...\n",
             "broken.py": "def ok(:\n    pass\n", "blob.py": b"\xff\xfe\x00binary"}
    changes = after(repo, base, edits)
    assert changes.functions == []
    assert changes.other_files == ["blob.py", "broken.py", "logo.png", "notes.txt", "stub.pyi"]
    assert changes.describe().endswith("(5 other files not analysed)")


def test_a_renamed_class_renames_its_methods_and_a_redefined_property_points_at_the_changed_half(repo):
    prop = ("class P:\n    @property\n    def x(self):\n        return self._x\n\n"
            "    @x.setter\n    def x(self, value):\n        self._x = value\n")
    changes = after(repo, {"p.py": prop, "shapes.py": SHAPES},
                    {"p.py": prop.replace("self._x = value", "self._x = int(value)"),
                     "shapes.py": SHAPES.replace("class Shape:", "class Figure:")})
    assert kinds(changes) == {("p.py", "P.x"): "modified",
                              ("shapes.py", "Shape.area"): "deleted", ("shapes.py", "Shape.name"): "deleted",
                              ("shapes.py", "Figure.area"): "added", ("shapes.py", "Figure.name"): "added"}
    assert [f.lineno for f in changes.functions if f.file == "p.py"] == [7]


def test_a_path_inside_the_repository_and_a_users_noprefix_diff_config_both_work(repo):
    commit(repo, {"src/pkg/shapes.py": SHAPES}, "base")
    with repo.config_writer() as config:
        config.set_value("diff", "noprefix", "true")  # GitPython alone finds no diff at all under it
    write(Path(repo.working_tree_dir), {"src/pkg/shapes.py": SHAPES.replace("return 0", "return 1")})
    changes = changed_functions(Path(repo.working_tree_dir) / "src" / "pkg", "HEAD")
    assert kinds(changes) == {("src/pkg/shapes.py", "Shape.area"): "modified"}


def test_outside_a_repository_or_with_an_unknown_ref_the_note_says_so(tmp_path_factory, repo):
    changes = changed_functions(tmp_path_factory.mktemp("plain"), "HEAD")
    assert (changes.ref, changes.functions, changes.other_files) == (None, [], [])
    assert changes.note == "not a git repository: changed functions are unknown"
    assert changes.describe() == changes.note
    commit(repo, {"shapes.py": SHAPES}, "base")
    for ref in ("no-such-branch", "0" * 40, "HEAD~5"):
        changes = changed_functions(Path(repo.working_tree_dir), ref)
        assert changes.ref is None and changes.functions == []
        assert changes.note == f"unknown commit {ref!r}: changed functions are unknown"


def code_objects(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_firstlineno"):
            yield from code_objects(const)


def test_definitions_agree_with_the_compilers_qualnames_and_first_lines():
    source = textwrap.dedent("""\
        import functools


        def plain():
            '''Doc.'''
            return 1


        @functools.wraps(plain)
        @staticmethod
        def decorated():
            @functools.cache
            def helper():
                class Local:
                    async def method(self):
                        pass
                return Local
            return helper


        class Outer:
            class Inner:
                @property
                def value(self):
                    return 2

            if True:
                def conditional(self):
                    return lambda: 3
        """)
    defs = definitions(source)
    compiled = {c.co_qualname: c.co_firstlineno for c in code_objects(compile(source, "m.py", "exec"))
                if c.co_flags & inspect.CO_OPTIMIZED and c.co_name != "<lambda>"}  # functions, not class bodies
    assert {d.qualname: d.first_lineno for d in defs} == compiled
    decorated = next(d for d in defs if d.qualname == "decorated")
    assert (decorated.first_lineno, decorated.lineno, decorated.end_lineno) == (9, 11, 18)
    assert [d.qualname for d in defs] == [
        "plain", "decorated", "decorated.<locals>.helper", "decorated.<locals>.helper.<locals>.Local.method",
        "Outer.Inner.value", "Outer.conditional"]
    assert definitions("def broken(:\n") == []


def test_fingerprints_leave_out_docstrings_and_nested_defs_but_not_a_local_classs_statements():
    source = textwrap.dedent('''\
        def outer():
            """Doc."""
            class Local:
                size = 1

                def method(self):
                    return 2
            return Local
        ''')

    def prints(text):
        return {d.qualname: d.fingerprint for d in definitions(text)}

    base = prints(source)
    assert prints(source.replace("Doc.", "Documented.")) == base
    method_edited = prints(source.replace("return 2", "return 3"))
    assert method_edited["outer"] == base["outer"]
    assert method_edited["outer.<locals>.Local.method"] != base["outer.<locals>.Local.method"]
    assert prints(source.replace("size = 1", "size = 2"))["outer"] != base["outer"]  # it runs with outer


def test_qualname_at_picks_the_innermost_definition():
    source = textwrap.dedent("""\
        def outer():
            x = 1

            @decorate
            def inner():
                return x
            return inner


        y = 2
        """)
    defs = definitions(source)
    assert qualname_at(defs, 1) == "outer"
    assert qualname_at(defs, 2) == "outer"
    assert qualname_at(defs, 4) == "outer.<locals>.inner"  # the decorator line: the inner's co_firstlineno
    assert qualname_at(defs, 6) == "outer.<locals>.inner"
    assert qualname_at(defs, 7) == "outer"
    assert qualname_at(defs, 10) is None
    assert qualname_at([], 1) is None
