"""What the SOAP loop itself costs per round, without the model's latency, against its target: at most
3x the runtime of the target's tests plus 2 s.

On the bundled example with its planted regression (examples/demo, examples/demo_regression.patch), each
regressed function goes through the loop with the scripted replies of examples/demo_replies.json, served
by the loopback Messages API, so the model answers at once. A round is everything from asking the model
to the verdict on its candidate: splice, the covering tests in the sandbox with each call checked against
the original's, the race on the regressed test, and for a kept revision its new profile. The set-up before
the first round (the original's tests, counting its calls, its profile) happens once per function and is
printed apart.

    python benchmarks/loop.py
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import git

from common import pkg_version, run_pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TARGETS = {"pick_list": "tests/test_orders.py::test_pick_list", "parse_orders": "tests/test_orders.py::test_parse_orders"}
ITERATIONS = 5
FACTOR, EXTRA_S = 3.0, 2.0  # the target: FACTOR x the tests' runtime + EXTRA_S per round


def make_project(tmp: Path) -> Path:
    project = tmp / "inventory"
    shutil.copytree(EXAMPLES / "demo", project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".soap"))
    repo = git.Repo.init(project)
    with repo.config_writer() as config:
        config.set_value("user", "name", "bench")
        config.set_value("user", "email", "bench@pytest-soap.invalid")
    repo.git.add("--all")
    repo.git.commit("--no-verify", "-qm", "base")
    repo.git.apply(str(EXAMPLES / "demo_regression.patch"))
    repo.git.commit("--no-verify", "-qam", "regression")
    return project


def main() -> int:
    sys.path.insert(0, str(ROOT))
    import json

    from pytest_soap.demo import model_server
    from pytest_soap.soap import Target
    from pytest_soap.soap.llm import AnthropicProvider
    from pytest_soap.soap.loop import optimize

    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}, pytest {pkg_version('pytest')}, pytest-soap {pkg_version('pytest-soap')}")
    print(f"replies: scripted (examples/demo_replies.json) on loopback; {ITERATIONS} rounds at most per function\n")
    print(f"{'function':<14}{'tests run':>11}{'set-up':>9}{'rounds':>8}{'per round':>11}{'target':>9}{'ratio':>8}  outcome")
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="soap-loop-bench-") as tmp:
        project = make_project(Path(tmp))
        os.environ.pop("ANTHROPIC_API_KEY", None)  # the scripted replies, whatever the caller's environment
        with model_server(EXAMPLES) as server:
            provider = AnthropicProvider(api_key="bench", base_url=server.url)
            for qualname, test in TARGETS.items():
                tests_s = statistics.median(run_pytest([test], project)[0] for _ in range(3))
                marks: list[tuple[float, str]] = []
                start = time.perf_counter()
                opt = optimize(Target(project, "inventory/orders.py", qualname, (test,)), provider, "claude-bench",
                               ITERATIONS, ["time_s"], json.dumps({"bench": qualname}),
                               progress=lambda line: marks.append((time.perf_counter(), line)))  # noqa: B023 - called within this turn
                end = time.perf_counter()
                asks = [t for t, line in marks if "asking" in line]
                if not asks:
                    print(f"{qualname:<14}{tests_s:>10.2f}s  the loop did not start: {opt.reason}")
                    return 1
                rounds = len(asks)
                per_round = (end - asks[0]) / rounds
                target = FACTOR * tests_s + EXTRA_S
                worst = max(worst, per_round / target)
                print(f"{qualname:<14}{tests_s:>10.2f}s{asks[0] - start:>8.2f}s{rounds:>8}{per_round:>10.2f}s"
                      f"{target:>8.2f}s{per_round / target:>7.2f}x  {opt.status}"
                      + (f", its test {opt.before['time_s'] * 1e3:.1f} ms -> {opt.after['time_s'] * 1e3:.1f} ms"
                         if opt.after else f" ({opt.reason})"))
    print(f"\nworst round cost over its target: {worst:.2f}x (target <= 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
