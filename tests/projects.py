"""The small projects many tests build: a package `pkg` with its module `work.py`, its tests in `tests/`,
an ini file that imports it from the project folder, and a git repository when the test needs history."""

from __future__ import annotations

import textwrap
from pathlib import Path

import git

ACTOR = git.Actor("t", "t@example.com")
INI = '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n'
# A function many tests optimise: a list scan where a dict would do, correct and slow on a large list.
UNIQUE = '''\
def unique(items):
    """The distinct items, in first-seen order."""
    seen = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen
'''
# UNIQUE's tests: one quick, one long enough (a few ms) for the gate to time.
UNIQUE_TESTS = '''\
from pkg.work import unique


def test_unique_keeps_first_seen_order():
    assert unique([3, 1, 3, 2, 1]) == [3, 1, 2]


def test_unique_on_a_large_list():
    data = list(range(1500, 0, -1)) * 2
    assert len(unique(data)) == 1500
'''


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def commit(repo: git.Repo, message: str) -> None:
    repo.git.add("--all")
    repo.index.commit(message, author=ACTOR, committer=ACTOR)


def package_project(root: Path, work: str, tests: str, ini: str = INI) -> None:
    """pkg/work.py and tests/test_work.py under `root`, with the ini file in pyproject.toml."""
    write(root / "pyproject.toml", ini)
    write(root / "pkg" / "__init__.py", "")
    write(root / "pkg" / "work.py", work)
    write(root / "tests" / "test_work.py", tests)


def git_project(root: Path, work: str, tests: str, ini: str = INI) -> git.Repo:
    """The same, committed as the base of a new repository."""
    package_project(root, work, tests, ini)
    repo = git.Repo.init(root)
    commit(repo, "base")
    return repo
