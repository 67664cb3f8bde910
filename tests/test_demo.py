"""`soap demo` end to end: the bundled example, a planted regression, the gate catching it, the SOAP loop
repairing it (scripted replies on loopback, no key), and the gate passing again after its patch; and a demo
that fails keeps its project and says how to run the failed step again."""

import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pytest_soap import demo


def test_soap_demo_catches_the_planted_regression(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")}
    result = subprocess.run([sys.executable, "-m", "pytest_soap.cli", "demo"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "REGRESSED" in out
    assert "pytest exited 1: the gate caught the planted regression" in out
    assert "ANTHROPIC_API_KEY is not set: the model's replies are the scripted ones" in out
    # Both planted regressions are flagged, with the ratios of report.json, and both scripted fixes are kept.
    assert re.search(r"tests/test_orders.py::test_pick_list +time \d+\.\d\d×", out)
    assert re.search(r"tests/test_orders.py::test_parse_orders +.*peak memory \d+\.\d\d×", out)
    assert "SOAP loop, pick_list: accepted: its calls took" in out
    assert "SOAP loop, parse_orders: accepted: its calls took" in out
    assert re.search(r"tests/test_orders.py::test_pick_list +unchanged: time \d+\.\d\d×", out)
    assert re.search(r"tests/test_orders.py::test_parse_orders +unchanged: time", out), [
        line for line in out.splitlines() if "test_parse_orders" in line]  # what step 4 read instead
    assert "The loop's patch undid the planted regression; the gate passes." in out
    assert list(tmp_path.iterdir()) == []  # it works in a temporary directory of its own
    assert "soap demo failed" not in result.stderr


def test_a_failed_demo_keeps_its_project_and_says_how_to_rerun_the_step(tmp_path, monkeypatch, capfd):
    """A copy of the examples whose planted "regression" only rewords a docstring: the gate has nothing to flag
    (and were it to flag pick_list, the scripted fix would gain nothing over the unchanged code), so step 3
    fails, whatever the machine's load."""
    examples = tmp_path / "examples"
    shutil.copytree(demo.find_examples(), examples, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    orders = (examples / "demo" / "inventory" / "orders.py").read_text(encoding="utf-8")
    old = '    """The SKUs to fetch from the shelves: each once, in the order they were first ordered."""'
    assert old in orders
    patch = difflib.unified_diff(orders.splitlines(keepends=True),
                                 orders.replace(old, old.replace("shelves", "warehouse's shelves")).splitlines(keepends=True),
                                 "a/inventory/orders.py", "b/inventory/orders.py")
    (examples / "demo_regression.patch").write_text("".join(patch), encoding="utf-8")
    monkeypatch.setattr(demo, "find_examples", lambda: examples)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the kept project lands where pytest cleans up
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv(demo.KEEP_ENV, raising=False)

    assert demo.run_demo() == 1
    err = capfd.readouterr().err
    assert "soap demo failed at step 3/4: the gate did not flag tests/test_orders.py::test_pick_list" in err
    kept = re.search(r"The demo project is kept at (\S+)\.", err)
    assert kept, err
    project = Path(kept.group(1))
    assert project.parent.parent == tmp_path and (project / ".git").is_dir() and (project / "report.json").is_file()
    rerun = f"cd {project} && {sys.executable} -m pytest --soap --soap-against HEAD~1 --soap-optimize --soap-json report.json"
    assert f"To run the failed step again:\n  {rerun}\n" in err
    assert "the scripted replies were served by `soap demo` only, so that run skips the SOAP loop" in err

    # The command runs the failed step again in the kept project: the same gate, its report rewritten.
    (project / "report.json").unlink()
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    again = subprocess.run(rerun, shell=True, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode in (0, 1), again.stdout[-3000:] + again.stderr[-3000:]
    assert (project / "report.json").is_file()
