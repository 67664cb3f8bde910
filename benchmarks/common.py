"""What the benchmarks share: running pytest in a fresh interpreter, and saying why a run did not happen."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def run_pytest(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """One pytest run in a fresh interpreter; its wall time, measured from outside."""
    # Keep the caller's pytest settings out, or they would apply to some configurations' runs only by accident.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    cmd = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def why(proc: subprocess.CompletedProcess) -> str:
    """pytest's own one-line explanation: its last line naming an error, else its last line."""
    lines = [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return f"exit code {proc.returncode}: {(errors or lines or ['no output'])[-1]}"


def pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"
