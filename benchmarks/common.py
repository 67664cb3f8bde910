"""What the benchmarks share: running pytest in a fresh interpreter, and saying why a run did not happen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def run_pytest(args: list[str], cwd: Path, timeout: float | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """One pytest run in a fresh interpreter; its wall time, measured from outside. The run has a process group
    of its own: past `timeout` seconds, or when this script is interrupted or terminated, it is killed with
    every process it started (a gate's ref side included), and a timeout reads as exit code -9."""
    # Keep the caller's pytest settings out, or they would apply to some configurations' runs only by accident.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    cmd = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        stderr += f"\nerror: timed out after {timeout:g} s"
    except BaseException:  # KeyboardInterrupt, or the SystemExit of a SIGTERM handler
        _kill_group(proc)
        raise
    return time.perf_counter() - start, subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this run started, and only that
    except ProcessLookupError:
        pass
    proc.wait()


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
