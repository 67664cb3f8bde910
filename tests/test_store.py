"""The baseline file: schema, atomic writes, merging, and what it records about where it was taken."""

import json
import os

import git
import pytest

from pytest_soap import store
from pytest_soap.records import Measurement, Sample


def passed(nodeid, t=0.01):
    return Measurement(nodeid, samples=[Sample(t, t, 2.0, 0.01)])


def test_save_then_load_round_trips_and_records_machine_python_and_commit(tmp_path):
    repo = git.Repo.init(tmp_path)
    (tmp_path / "a.py").write_text("x = 1\n")
    repo.index.add(["a.py"])
    sha = repo.index.commit("first", author=git.Actor("t", "t@example.com")).hexsha
    path = tmp_path / ".soap" / "baseline.json"
    assert store.save(path, [passed("t.py::test_a[odd id ü/::]")], None, tmp_path) == 1
    data = json.loads(path.read_text())
    assert data["schema"] == store.SCHEMA
    assert data["commit"] == sha and data["dirty"] is False
    assert data["python"].endswith(os.sys.version.split()[0])
    assert data["machine"]["cpus"] == os.cpu_count()
    loaded = store.load(path)
    assert loaded.commit == sha
    assert loaded.tests["t.py::test_a[odd id ü/::]"]["time_s"] == 0.01


def test_save_merges_and_skips_failed_tests(tmp_path):
    path = tmp_path / "b.json"
    store.save(path, [passed("t::a", 0.01), passed("t::b", 0.02)], None, tmp_path)
    failed = Measurement("t::b", outcome="failed", samples=[Sample(9.0, 9.0)])
    store.save(path, [passed("t::a", 0.03), failed], store.load(path), tmp_path)
    tests = store.load(path).tests
    assert tests["t::a"]["time_s"] == 0.02  # the median of both saves
    assert len(tests["t::a"]["saves"]) == 2
    assert tests["t::b"]["time_s"] == 0.02  # a failing run does not overwrite a good figure


def test_missing_baseline_is_none(tmp_path):
    assert store.load(tmp_path / "nope.json") is None


@pytest.mark.parametrize("content, message", [
    ('{"schema": 1, "tests": {"t::a": {"time_', "is corrupt"),
    ("", "is corrupt"),
    ('["not", "a", "baseline"]', "is not a pytest-soap baseline"),
    ('{"schema": 99, "tests": {}}', "has schema 99, newer than"),
    ('{"schema": 1, "tests": {"t::a": {"time_s": "fast"}}}', "is corrupt .t::a: time_s is not a number."),
])
def test_bad_baselines_raise_one_line_errors_and_stay_untouched(tmp_path, content, message):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(store.BaselineError, match=message) as e:
        store.load(path)
    assert "\n" not in str(e.value)
    assert path.read_text() == content


def test_a_failed_write_leaves_the_old_baseline_intact(tmp_path, monkeypatch):
    path = tmp_path / "baseline.json"
    store.save(path, [passed("t::a")], None, tmp_path)
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(store.BaselineError, match="No space left on device; the old baseline is untouched"):
        store.save(path, [passed("t::a", 5.0)], store.load(path), tmp_path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]  # no temporary file left behind


def test_outside_git_the_commit_is_none(tmp_path):
    assert store.current_commit(tmp_path) == (None, False)


def test_each_save_adds_a_run_and_the_figure_is_their_median(tmp_path):
    path = tmp_path / "b.json"
    for t in (0.010, 0.030, 0.020, 0.040, 0.050, 0.060):
        m = passed("t::a", t)
        m.heap = {"peak_mb": 2.0, "tmu_mbs": 0.01}
        store.save(path, [m], store.load(path), tmp_path)
    entry = store.load(path).tests["t::a"]
    assert [s["time_s"] for s in entry["saves"]] == [0.030, 0.020, 0.040, 0.050, 0.060]  # the last five
    assert entry["time_s"] == 0.040
    assert entry["heap"] == {"peak_mb": 2.0, "tmu_mbs": 0.01}


@pytest.fixture
def umask():
    """Set the process's umask for one test (pytester's subprocesses inherit it), then put it back."""
    before = os.umask(0o022)
    yield os.umask
    os.umask(before)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_a_new_baseline_gets_the_mode_open_would_give_it(pytester, umask, mask, mode):
    umask(mask)
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest("--soap", "--soap-save", "--soap-memory", "off")
    assert result.ret == 0, result.stdout.str()
    baseline = pytester.path / ".soap" / "baseline.json"
    assert "test_a" in baseline.read_text()
    assert baseline.stat().st_mode & 0o777 == mode


def test_a_rewritten_file_keeps_its_own_mode(tmp_path, umask):
    path = tmp_path / "baseline.json"
    store.save(path, [passed("t::a")], None, tmp_path)
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o640)
    store.save(path, [passed("t::a")], store.load(path), tmp_path)
    assert path.stat().st_mode & 0o777 == 0o640
