"""`soap demo` end to end: the bundled example, a planted regression, the gate catching it, the SOAP loop
repairing it (scripted replies on loopback, no key), and the gate passing again after its patch."""

import os
import subprocess
import sys


def test_soap_demo_catches_the_planted_regression(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")}
    result = subprocess.run([sys.executable, "-m", "pytest_soap.cli", "demo"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "REGRESSED" in out
    assert "pytest exited 1: the gate caught the planted regression" in out
    assert "tests/test_orders.py::test_pick_list" in out
    assert "ANTHROPIC_API_KEY is not set: the model's replies are the scripted ones" in out
    assert "SOAP loop, pick_list: accepted" in out
    assert "tests/test_orders.py::test_pick_list no longer regressed" in out
    assert list(tmp_path.iterdir()) == []  # it works in a temporary directory of its own
