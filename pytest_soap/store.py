"""The baseline file: a versioned, atomically written record of one run's figures per test."""

from __future__ import annotations

import json
import os
import platform
import secrets
import stat
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .records import JUDGED_OUTCOMES, METRICS, Measurement

SCHEMA = 1
KEPT_SAVES = 5  # a test's figures from this many most recent saves: their spread is its run-to-run noise


class BaselineError(Exception):
    """A baseline that cannot be read or written; the message is one line for the user."""


@dataclass
class Baseline:
    tests: dict[str, dict] = field(default_factory=dict)
    created: str = ""
    machine: dict = field(default_factory=dict)
    python: str = ""
    commit: str | None = None
    dirty: bool = False
    memory: str = "rss"

    def describe(self) -> str:
        commit = f"{self.commit[:10]}{' (dirty)' if self.dirty else ''}" if self.commit else "no commit"
        return (f"{self.created[:19].replace('T', ' ')} UTC, {commit}, "
                f"{self.machine.get('node', '?')}, {self.python}")


def machine() -> dict:
    return {"node": platform.node(), "system": platform.system(), "machine": platform.machine(),
            "processor": platform.processor(), "cpus": os.cpu_count()}


def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def current_commit(path: Path) -> tuple[str | None, bool]:
    """The commit checked out at `path` and whether the tree differs from it; (None, False) outside git."""
    try:
        import git

        repo = git.Repo(path, search_parent_directories=True)
        return repo.head.commit.hexsha, repo.is_dirty(untracked_files=False)
    except Exception:  # not a repository, no commits yet, or no git binary: the baseline just lacks a commit
        return None, False


def load(path: Path) -> Baseline | None:
    """The baseline at `path`, None when there is none yet; BaselineError when it cannot be trusted."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BaselineError(f"cannot read baseline {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BaselineError(f"baseline {path} is corrupt ({e.msg} at line {e.lineno}); "
                            "re-create it with `pytest --soap --soap-save`") from None
    if not isinstance(data, dict) or not isinstance(data.get("schema"), int) or not isinstance(data.get("tests"), dict):
        raise BaselineError(f"baseline {path} is not a pytest-soap baseline; "
                            "re-create it with `pytest --soap --soap-save`")
    if data["schema"] > SCHEMA:
        raise BaselineError(f"baseline {path} has schema {data['schema']}, newer than this pytest-soap reads "
                            f"({SCHEMA}); upgrade pytest-soap or re-create it with --soap-save")
    tests = {nodeid: entry for nodeid, entry in data["tests"].items() if isinstance(entry, dict)}
    for nodeid, figures in tests.items():
        wrong = [m for m in METRICS if figures.get(m) is not None and not isinstance(figures[m], (int, float))]
        if wrong:
            raise BaselineError(f"baseline {path} is corrupt ({nodeid}: {wrong[0]} is not a number); "
                                "re-create it with `pytest --soap --soap-save`")
    return Baseline(tests=tests, created=data.get("created", ""), machine=data.get("machine", {}),
                    python=data.get("python", ""), commit=data.get("commit"), dirty=data.get("dirty", False),
                    memory=data.get("memory", "rss"))


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and a rename, so a failure leaves the old file whole.
    A new file gets the mode open() would give it; an existing one keeps its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temporary(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if path.exists():  # before the text goes in: a private file's text is never more readable than it was
                os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _new_temporary(path: Path) -> tuple[int, str]:
    """A new file beside `path`, opened for writing. Not mkstemp: its 0600 would hide a baseline meant to be
    committed and shared. Asking for 0666 lets the kernel apply the umask (and default ACLs) as open() does,
    with no umask to read (os.umask reads it only by changing it, a race with other threads)."""
    while True:
        tmp = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # a name another writer holds: draw again
            continue


def entry(m: Measurement, previous: dict | None) -> dict:
    """A test's baseline entry: the median of its last few saves, those saves, and memray's heap."""
    saves = ((previous or {}).get("saves") or [])[-(KEPT_SAVES - 1):] + [m.figures()]
    figures = {}
    for metric in METRICS:
        values = [s[metric] for s in saves if s.get(metric) is not None]
        figures[metric] = statistics.median(values) if values else None
    return {**figures, "heap": m.heap or (previous or {}).get("heap"), "saves": saves}


def save(path: Path, measurements: list[Measurement], previous: Baseline | None, rootdir: Path) -> int:
    """Merge this run's passing tests into the baseline at `path`; returns how many were written."""
    tests = dict(previous.tests) if previous else {}
    fresh = {m.nodeid: entry(m, tests.get(m.nodeid)) for m in measurements
             if m.outcome in JUDGED_OUTCOMES and m.samples}
    tests.update(fresh)
    commit, dirty = current_commit(rootdir)
    data = {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(), "machine": machine(),
            "python": python_version(), "commit": commit, "dirty": dirty,
            "memory": "rss", "tests": dict(sorted(tests.items()))}
    try:
        atomic_write(path, json.dumps(data, indent=1) + "\n")
    except OSError as e:
        raise BaselineError(f"cannot write baseline {path}: {e.strerror or e}; the old baseline is untouched") from None
    return len(fresh)
