"""`soap merge`: JSON reports of sharded runs of real pytest sessions (pytester) as one report."""

import copy
import json

import git
import pytest

from pytest_soap.merge import MergeError, merge, merge_files, merge_into
from pytest_soap.report.markdown import render

from projects import commit, git_project, write  # tests/projects.py

WORK = """
    import time

    def slowed():
        time.sleep(0.02 * {slow})

    def steady():
        time.sleep(0.01)
"""

TESTS = """
    from pkg import work

    def test_slow_a():
        work.slowed()

    def test_slow_b():
        work.slowed()

    def test_steady():
        work.steady()
"""


@pytest.fixture
def project(pytester):
    """A repository whose last commit makes `slowed` 10x slower: two tests call it."""
    root = pytester.path
    (root / ".gitignore").write_text("*.json\n")
    repo = git_project(root, WORK.format(slow=1), TESTS)
    write(root / "pkg" / "work.py", WORK.format(slow=10))
    commit(repo, "slower")
    return pytester


def shard(pytester, name, selection):
    pytester.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", name, "-k", selection)
    return pytester.path / name


def ids(report):
    return [t["nodeid"].split("::")[-1] for t in report["tests"]]


def test_two_shards_make_one_report_of_the_union_that_renders(project):
    first = shard(project, "shard1.json", "slow_a or steady")
    second = shard(project, "shard2.json", "slow_b")
    one, two = (json.loads(p.read_text()) for p in (first, second))
    assert sorted(ids(one)) == ["test_slow_a", "test_steady"] and ids(two) == ["test_slow_b"]

    merged = merge_files([first, second])
    assert merged["schema"] == 1 and merged["shards"] == 2
    assert sorted(ids(merged)) == ["test_slow_a", "test_slow_b", "test_steady"]
    assert sorted(n.split("::")[-1] for n in merged["regressions"]) == ["test_slow_a", "test_slow_b"]
    assert merged["against"]["commit"] == one["against"]["commit"]
    assert merged["against"]["suspects"] == one["against"]["suspects"] + two["against"]["suspects"]
    assert merged["thresholds"] == one["thresholds"]
    slowed = [f for f in merged["functions"] if f["qualname"] == "slowed"]
    assert len(slowed) == 1  # one entry, its tests united, each test's evidence kept
    assert sorted(t.split("::")[-1] for t in slowed[0]["tests"]) == ["test_slow_a", "test_slow_b"]
    assert set(slowed[0]["evidence"]) == set(slowed[0]["tests"])

    text = render(merged)
    verdict = next(line for line in text.splitlines() if line.startswith(":x:"))
    assert verdict.startswith(":x: **2 tests regressed** against `HEAD~1`")
    assert verdict.endswith("3 tests: 2 regressed, 1 unchanged; merged from 2 shards")
    assert text.count("| time | ") == 2 and "xychart-beta" in text

    empty_shard = {**two, "tests": [], "functions": []}
    assert merge([merged, empty_shard])["shards"] == 3  # a merged report counts its own shards


@pytest.fixture
def report(pytester):
    """One real report with a ref compared: the material each conflict is made from."""
    pytester.makepyfile(test_two="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    pytester.makeini("[pytest]\n")
    repo = git.Repo.init(pytester.path)
    (pytester.path / ".gitignore").write_text("*.json\n")
    commit(repo, "base")
    pytester.runpytest("--soap", "--soap-against", "HEAD", "--soap-json", "report.json")
    data = json.loads((pytester.path / "report.json").read_text())
    assert data["against"] and len(data["tests"]) == 2
    return data


def split(report):
    """The report as two shards, one test each."""
    one, two = copy.deepcopy(report), copy.deepcopy(report)
    one["tests"], two["tests"] = report["tests"][:1], report["tests"][1:]
    return one, two


def one_line_error(reports):
    with pytest.raises(MergeError) as info:
        merge(reports)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_test_run_in_two_shards_is_a_conflict_unless_one_skipped_it(report):
    assert "test_two.py::test_a ran in both report 1 and report 2" in one_line_error([report, report])

    skipped = copy.deepcopy(report)
    skipped["tests"][0].update(outcome="skipped", verdict="skipped")
    skipped["tests"] = skipped["tests"][:1]
    for order in ([skipped, report], [report, skipped]):
        merged = merge(order)
        assert [t["outcome"] for t in merged["tests"]] == ["passed", "passed"]
        assert [t["nodeid"] for t in merged["tests"]] == [t["nodeid"] for t in report["tests"]]


def test_shards_compared_or_judged_differently_do_not_merge(report):
    one, two = split(report)
    assert merge([one, two])["tests"] == report["tests"]

    other = copy.deepcopy(two)
    other["against"]["commit"] = "0" * 40
    message = one_line_error([one, other])
    assert "report 1 and report 2 differ in against.commit" in message

    other = copy.deepcopy(two)
    other["thresholds"]["time_pct"] = 25.0
    assert "differ in thresholds.time_pct (10.0 and 25.0)" in one_line_error([one, other])

    other = copy.deepcopy(two)
    other["against"] = None
    assert "report 1 has against and report 2 has none" in one_line_error([one, other])

    assert one_line_error([]) == "no reports to merge"


def test_the_first_patch_is_the_patch_and_every_patch_is_listed(report):
    one, two = split(report)
    one["patch"], two["patch"] = "shard1/.soap/optimized.patch", "shard2/.soap/optimized.patch"
    merged = merge([one, two])
    assert merged["patch"] == "shard1/.soap/optimized.patch"
    assert merged["patches"] == ["shard1/.soap/optimized.patch", "shard2/.soap/optimized.patch"]
    assert "`shard1/.soap/optimized.patch`, `shard2/.soap/optimized.patch`" in render(merged)

    two["patch"] = None
    assert "patches" not in merge([one, two])


def test_a_missing_corrupt_or_foreign_file_is_named(report, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(report))
    cases = {
        "missing.json": (None, "missing.json: no such file"),
        "truncated.json": (json.dumps(report)[:200], "truncated.json is corrupt, not a JSON report ("),
        "newer.json": (json.dumps({**report, "schema": 7}), "newer.json has schema 7, newer than this pytest-soap reads (1)"),
        "baseline.json": ('{"schema": 1, "tests": {}}', "baseline.json is not a pytest-soap JSON report"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.raises(MergeError) as info:
            merge_files([good, path])
        assert str(path) in str(info.value) and expected in str(info.value)
        assert "\n" not in str(info.value)


def test_soap_report_and_merge_commands_say_one_line_for_a_bad_file(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 1, "tests": [')
    merge = ["merge", "-o", str(tmp_path / "out.json"), str(bad), str(tmp_path / "missing.json")]
    for args in (["report", str(bad)], merge):
        run = subprocess.run([sys.executable, "-m", "pytest_soap.cli", *args], capture_output=True, text=True)
        assert run.returncode == 2 and run.stdout == "", run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and "bad.json" in run.stderr
        assert run.stderr.startswith(f"soap {args[0]}: ")
    assert not (tmp_path / "out.json").exists()


def test_merge_into_writes_the_merged_report_and_never_over_a_shard(report, tmp_path):
    one, two = split(report)
    shards = [tmp_path / "s1.json", tmp_path / "s2.json"]
    for path, shard in zip(shards, (one, two)):
        path.write_text(json.dumps(shard))
    (tmp_path / "link.json").symlink_to(shards[0])
    (tmp_path / "hard.json").hardlink_to(shards[1])
    sub = tmp_path / "sub"
    sub.mkdir()
    for output in (shards[0], sub / ".." / "s2.json", tmp_path / "link.json", tmp_path / "hard.json"):
        with pytest.raises(MergeError) as info:
            merge_into(output, shards)
        assert str(info.value) == (f"{output} is both the output and one of the reports to merge: "
                                   "it would be overwritten")
    assert [json.loads(p.read_text()) for p in shards] == [one, two]

    merged = merge_into(tmp_path / "out.json", shards)
    assert json.loads((tmp_path / "out.json").read_text()) == merged and merged["tests"] == report["tests"]
