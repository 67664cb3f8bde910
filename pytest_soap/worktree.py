"""A temporary git worktree: a commit checked out, detached, in a folder of its own, removed on every way
out (Ctrl-C included). The ref's side of --soap-against, the SOAP loop's sandbox and the action's
optimisation branch each work in one."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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
