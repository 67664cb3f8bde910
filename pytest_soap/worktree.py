"""A temporary git worktree: a commit checked out, detached, in a folder of its own, removed on every way
out (Ctrl-C included). The ref's side of --soap-against, the SOAP loop's sandbox and the action's
optimisation branch each work in one."""

from __future__ import annotations

import compileall
import importlib.util
import os
import py_compile
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def temporary_worktree(repo_root: Path, commit: str, prefix: str) -> Iterator[Path]:
    """`commit` checked out at `<folder>/tree`; the folder (a fresh temporary one) is the caller's to use
    beside it, and goes with it. git's errors (git.GitCommandError) are the caller's to word."""
    import git  # here: the processes that measure a side never need it

    repo = git.Repo(repo_root)
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    tree = folder / "tree"
    try:
        repo.git.worktree("add", "--detach", "--force", str(tree), commit)
        yield tree
    finally:
        try:
            repo.git.worktree("remove", "--force", str(tree))
        except git.GitCommandError:
            pass  # never made, or already gone: rmtree and prune below settle it
        shutil.rmtree(folder, ignore_errors=True)
        try:
            repo.git.worktree("prune")
        except git.GitCommandError:
            pass  # the entry stays stale until git's next prune; the original exception, if any, matters more


def warm_bytecode(head: Path, twin: Path) -> None:
    """Write the bytecode cache of each tree's Python files (git's tracked and untracked ones, not the
    ignored) that lack an up-to-date one, as an import would. A fresh worktree has none, and a fresh clone
    neither: the first imports there compile, and under PYTHONDONTWRITEBYTECODE every process does, while
    the other side may read a cache (a test running `python -m pkg.cli --help` read 0.2x on unchanged code).
    Written whatever that setting says: both sides must start alike. Timestamp pycs, as import writes them
    (compileall would write checked-hash ones under SOURCE_DATE_EPOCH), at each level the sides import at.

    `twin` (the ref's fresh worktree) mostly holds the same files as `head`: compiling all of them again took
    0.9 s of a 6 s networkx suite. A file whose bytes are the head's gets the head's pyc instead, and the head
    file's modification time, which that pyc is checked against (import sets the code's file name anew)."""
    levels = optimization_levels()
    for name in python_files(head):
        compile_timestamped(head / name, levels)
    for name in python_files(twin):
        if not copy_bytecode(head / name, twin / name, levels):
            compile_timestamped(twin / name, levels)


def python_files(tree: Path) -> list[str]:
    import git  # here: the processes that measure a side never need it

    listed = git.Repo(tree).git.ls_files("-z", "--cached", "--others", "--exclude-standard", "--", "*.py")
    return list(filter(None, listed.split("\0")))


def compile_timestamped(source: Path, levels: list[int]) -> None:
    # a list of levels is documented (3.9+); typeshed knows only an int
    compileall.compile_file(source, quiet=2, optimize=levels,  # type: ignore[arg-type]
                            invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)


def copy_bytecode(source: Path, twin: Path, levels: list[int]) -> bool:
    """`source`'s up-to-date pycs given to `twin`, a file with the same bytes; False if it cannot be."""
    try:
        if source.read_bytes() != twin.read_bytes():
            return False
        pycs = [(importlib.util.cache_from_source(str(source), optimization=level or ""),
                 importlib.util.cache_from_source(str(twin), optimization=level or "")) for level in levels]
        if not all(os.path.exists(pyc) for pyc, _ in pycs):
            return False  # the head's did not compile: the twin's compile says why, as import would
        for pyc, twin_pyc in pycs:
            os.makedirs(os.path.dirname(twin_pyc), exist_ok=True)
            shutil.copyfile(pyc, twin_pyc)
        stat = source.stat()
        os.utime(twin, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        return True
    except OSError:
        return False


def optimization_levels() -> list[int]:
    """The -O levels code is imported at: this interpreter's, which the sides' processes are given, and the
    environment's (PYTHONOPTIMIZE), which a test's own `python` subprocess gets."""
    value = os.environ.get("PYTHONOPTIMIZE", "")
    environment = (int(value) if value.isdigit() else 1) if value else 0
    return sorted({sys.flags.optimize, min(environment, 2)})
