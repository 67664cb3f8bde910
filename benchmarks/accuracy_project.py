"""The project benchmarks/accuracy.py gates: a git repository with two commits, A and B (HEAD).

planted/ holds one module per function and tests/test_planted.py one test per function. B differs from
A only in the planted modules: each one's run() multiplies its work (a loop's length, or the MiB it holds)
by a known factor. Every other file, the unchanged functions and the tests included, is byte-identical in both.

tests/test_body.py is the rest of a realistic suite: BODY_COPIES more tests of each fixed unchanged length.
In a pull request the regressed tests are a small part of the suite's time; here they are about a tenth.
Without the body they were more than half, and what the gate costs is mostly what its regressions cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
TIME_BASE_MS = 30  # planted time regressions: long enough that noise is modest, short enough for 10x
MEMORY_BASE_MIB = 20  # planted memory regressions hold this much in commit A
HOLD_MS = 20  # and keep it that long, so TMU has an area to measure

# The loop every function spends its time in: CPU-bound, deterministic, no allocation that grows.
WORK = '''\
def spin(n):
    """n rounds of integer arithmetic."""
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1000003
    return acc
'''


@dataclass(frozen=True)
class Plant:
    name: str
    metric: str  # the figure the plant changes: time_s or peak_mb (TMU follows peak)
    factor: float

    @property
    def nodeid(self) -> str:
        return f"tests/test_planted.py::test_{self.name}"


PLANTED = [Plant("time_x1_1", "time_s", 1.1), Plant("time_x1_15", "time_s", 1.15), Plant("time_x1_2", "time_s", 1.2),
           Plant("time_x1_5", "time_s", 1.5), Plant("time_x2", "time_s", 2), Plant("time_x10", "time_s", 10),
           Plant("memory_x1_1", "peak_mb", 1.1), Plant("memory_x3", "peak_mb", 3)]
# Unchanged functions and their lengths in ms; "random" draws its length from 0.5x to 1.5x of 20 ms per call;
# "subprocess" starts a Python that does nothing (20 to 40 ms, mostly the OS's and the interpreter's start-up:
# noise of another kind than a loop's, which a sibling process on the other core may disturb).
UNCHANGED = {"1ms": 1, "5ms": 5, "20ms": 20, "100ms": 100, "200ms": 200, "random": 20, "subprocess": None}
IRREGULAR = ("random", "subprocess")  # not in the body: one test each
# Test order: unchanged tests between the planted ones, so that a plant's leftovers (memory, caches)
# would show up as a false alarm on its neighbour.
# The body: this many more tests of each fixed length, calling the same unchanged functions.
BODY_COPIES = 15
BODY = [f"unchanged_{length}" for length in UNCHANGED if length not in IRREGULAR for _ in range(BODY_COPIES)]
ORDER = ["unchanged_1ms", "time_x1_1", "unchanged_5ms", "time_x1_15", "memory_x1_1", "unchanged_subprocess",
         "time_x1_2", "unchanged_20ms", "time_x1_5", "unchanged_random", "time_x2", "memory_x3", "unchanged_100ms",
         "time_x10", "unchanged_200ms"]
SUBPROCESS = ("import subprocess\nimport sys\n\n\n"
              "def run():\n    # a fresh interpreter that does nothing: its start-up is the test's time\n"
              "    return subprocess.run([sys.executable, '-c', 'pass'], check=True).returncode\n")


def iterations_per_ms() -> float:
    """How many rounds of spin() this machine runs in a millisecond (best of 5), to size the loops."""
    namespace: dict = {}
    exec(WORK, namespace)
    n, best = 200_000, float("inf")
    for _ in range(5):
        start = time.perf_counter()
        namespace["spin"](n)
        best = min(best, time.perf_counter() - start)
    return n / (best * 1000)


def module_source(name: str, commit: str, per_ms: float) -> str:
    """planted/<name>.py as of commit A or B. Sizes are literals fixed at generation, so the code is
    deterministic; B's only change is the factor in a planted module."""
    if name == "unchanged_subprocess":
        return SUBPROCESS
    if name.startswith("unchanged_"):
        length = UNCHANGED[name.removeprefix("unchanged_")]
        n = round(length * per_ms)
        if name == "unchanged_random":
            return (f"import random\n\nfrom planted._work import spin\n\nN = {n}\n\n\n"
                    "def run():\n    # unseeded: a different length every call, by design\n"
                    "    return spin(round(N * random.uniform(0.5, 1.5)))\n")
        return f"from planted._work import spin\n\nN = {n}\n\n\ndef run():\n    return spin(N)\n"
    plant = next(p for p in PLANTED if p.name == name)
    # B changes run() itself, so attribution has a changed function to find; the time is still spent in
    # spin(), the unchanged helper that run() now calls with a longer loop.
    factor = f" * {plant.factor:g}" if commit == "B" else ""
    if plant.metric == "time_s":
        return (f"from planted._work import spin\n\nN = {round(TIME_BASE_MS * per_ms)}\n\n\n"
                f"def run():\n    return spin(round(N{factor}))\n")
    return (f"from planted._work import spin\n\nSIZE = {MEMORY_BASE_MIB * MIB}\n"
            f"HOLD = {round(HOLD_MS * per_ms)}\n\n\n"
            "def run():\n"
            "    # b'x' * n writes every byte, so the pages are resident (bytes(n) would leave them untouched)\n"
            f"    data = b'x' * round(SIZE{factor})\n"
            "    spin(HOLD)  # hold it a while\n"
            "    return len(data)\n")


def test_source(names: list[str], numbered: bool = False) -> str:
    lines = ["import importlib\n\n"]
    for n, name in enumerate(names):
        test = f"{name.removeprefix('unchanged_')}_{n}" if numbered else name
        lines.append(f"\ndef test_{test}():\n    assert importlib.import_module('planted.{name}').run() >= 0\n\n")
    return "".join(lines)


def write_commit(project: Path, commit: str, per_ms: float) -> None:
    files = {
        "pyproject.toml": '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n',
        ".gitignore": "__pycache__/\n.soap/\n",
        "planted/__init__.py": "",
        "planted/_work.py": WORK,
        "tests/test_planted.py": test_source(ORDER),
        "tests/test_body.py": test_source(BODY, numbered=True),
        **{f"planted/{name}.py": module_source(name, commit, per_ms) for name in ORDER},
    }
    for path, text in files.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(text)


def generate(project: Path):
    """Creates the repository; returns it (HEAD at B, branch checked out) and commit A's sha."""
    import git  # GitPython

    per_ms = iterations_per_ms()
    project.mkdir(parents=True)
    repo = git.Repo.init(project)
    with repo.config_writer() as config:  # works with no git identity on the machine, never asks to sign
        config.set_value("user", "name", "pytest-soap accuracy benchmark")
        config.set_value("user", "email", "accuracy@pytest-soap.invalid")
        config.set_value("commit", "gpgsign", "false")
    for commit in ("A", "B"):
        write_commit(project, commit, per_ms)
        repo.git.add("--all")
        repo.git.commit("--no-verify", "--quiet", "-m", f"commit {commit}")
        if commit == "A":
            sha_a = repo.head.commit.hexsha
    return repo, sha_a


def load_function(repo, rev: str, name: str):
    """The run() of planted/<name>.py as of rev, compiled in this process (planted._work must be importable)."""
    namespace: dict = {"__name__": f"planted.{name}"}
    exec(compile(repo.git.show(f"{rev}:planted/{name}.py"), f"{rev[:10]}:planted/{name}.py", "exec"), namespace)
    return namespace["run"]
