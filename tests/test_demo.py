"""`soap demo` end to end: the bundled example, a baseline, a planted regression, and the gate catching it."""

import subprocess
import sys


def test_soap_demo_catches_the_planted_regression(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pytest_soap.cli", "demo"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "REGRESSED" in out
    assert "pytest exited 1: the gate caught the planted regression" in out
    assert "tests/test_orders.py::test_pick_list" in out
    assert list(tmp_path.iterdir()) == []  # it works in a temporary directory of its own
