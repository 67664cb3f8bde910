"""`pytest --soap` end to end, in real pytest sessions (pytester)."""

import json

import pytest

TESTS = """
    import time
    import knobs

    def test_steady():
        time.sleep(0.01)

    def test_slowed():
        time.sleep(0.01 * knobs.SLOW)

    def test_memory():
        data = b"x" * (knobs.MEM_MB * 2**20)  # bytes are written, so the pages are resident
        # Writing 10 MiB takes 4-5 ms, and with both cores busy its time less the run-queue wait read from
        # 11 to 14.6 ms over ten runs (10 ms asleep): a 10% line on 15 ms sits inside that error. Here it is 7%.
        time.sleep(0.05)
        assert len(data)
"""


def knobs(pytester, slow=1, mem_mb=10):
    pytester.makepyfile(knobs=f"SLOW = {slow}\nMEM_MB = {mem_mb}\n# {'x' * slow}\n")


@pytest.fixture
def project(pytester):
    knobs(pytester)
    pytester.makepyfile(test_work=TESTS)
    return pytester


def report(pytester, name="report.json"):
    return json.loads((pytester.path / name).read_text())


def by_id(data):
    return {t["nodeid"]: t for t in data["tests"]}


def test_without_the_flag_the_plugin_stays_out_of_the_way(project):
    result = project.runpytest()
    assert result.ret == 0
    assert "pytest-soap" not in result.stdout.str()
    assert not (project.path / ".soap").exists()


def test_without_a_baseline_it_says_how_to_make_one(project):
    result = project.runpytest("--soap")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["No baseline at .soap?baseline.json yet*pytest --soap --soap-save*"])


def test_unchanged_code_is_not_flagged_across_repeated_runs(project):
    assert project.runpytest("--soap", "--soap-save").ret == 0
    assert (project.path / ".soap" / "baseline.json").exists()
    for _ in range(3):
        result = project.runpytest("--soap", "--soap-json", "report.json")
        assert result.ret == 0, result.stdout.str()
        assert report(project)["regressions"] == []
        assert {t["verdict"] for t in report(project)["tests"]} <= {"unchanged", "improved"}


def test_gross_regressions_fail_the_run_with_the_right_ratio(project):
    assert project.runpytest("--soap", "--soap-save").ret == 0
    knobs(project, slow=10, mem_mb=30)
    result = project.runpytest("--soap", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    lines = result.stdout.lines
    reason = next(line for line in lines if line.startswith("pytest-soap: "))
    assert reason.startswith("pytest-soap: 2 tests regressed: test_work.py::test_")
    result.stdout.fnmatch_lines(["REGRESSED (2):", "*time *ms → *ms *×*sign test p=*"])
    tests = by_id(report(project))
    slowed, memory = tests["test_work.py::test_slowed"], tests["test_work.py::test_memory"]
    assert slowed["verdict"] == "regressed" and "time_s" in slowed["regressed_metrics"]
    assert 7 < slowed["metrics"]["time_s"]["ratio"] < 13
    assert slowed["runs"] >= 5  # confirmed by reruns, not one sample
    assert memory["verdict"] == "regressed" and "peak_mb" in memory["regressed_metrics"]
    assert 2.5 < memory["metrics"]["peak_mb"]["ratio"] < 3.5
    assert memory["heap"]["peak_mb"] == pytest.approx(30, rel=0.05)  # memray's exact heap for the suspect
    assert tests["test_work.py::test_steady"]["verdict"] != "regressed"
    assert report(project)["regressions"] == ["test_work.py::test_slowed", "test_work.py::test_memory"]


def test_json_report_follows_the_schema(project):
    project.runpytest("--soap", "--soap-save")
    project.runpytest("--soap", "--soap-json", "out/report.json")
    data = report(project, "out/report.json")
    assert data["schema"] == 1
    assert set(data) >= {"tests", "regressions", "functions", "optimizations", "patch"}
    entry = data["tests"][0]
    assert set(entry) >= {"nodeid", "outcome", "time_s", "cpu_s", "peak_mb", "tmu_mbs", "baseline", "verdict",
                          "regressed_metrics"}
    assert set(entry["baseline"]) == {"time_s", "cpu_s", "peak_mb", "tmu_mbs"}
    assert entry["peak_mb"] is not None and entry["tmu_mbs"] is not None


@pytest.mark.parametrize("content, message", [
    ('{"schema": 1, "tests": {"test_work.py::test_steady": {"ti', "is corrupt*re-create it with*--soap-save*"),
    ('{"schema": 7, "tests": {}}', "has schema 7, newer than this pytest-soap reads*"),
])
def test_a_bad_baseline_stops_the_run_with_one_line_and_is_kept(project, content, message):
    path = project.path / ".soap" / "baseline.json"
    path.parent.mkdir()
    path.write_text(content)
    result = project.runpytest("--soap")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-soap: baseline *baseline.json {message}"])
    assert len([line for line in result.stderr.lines if line.strip()]) == 1
    assert path.read_text() == content
    # --soap-save is how a user replaces it.
    assert project.runpytest("--soap", "--soap-save").ret == 0
    assert json.loads(path.read_text())["schema"] == 1


def test_an_unwritable_baseline_folder_is_one_clear_line(project):
    (project.path / "blocker").write_text("a file where the folder should be")
    result = project.runpytest("--soap", "--soap-save", "--soap-baseline", "blocker/baseline.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["pytest-soap: cannot write baseline *blocker?baseline.json: *"])
    assert (project.path / "blocker").read_text() == "a file where the folder should be"


def test_failing_skipped_and_xfail_tests_get_verdicts_and_keep_pytests_exit_code(pytester):
    pytester.makepyfile("""
        import time, pytest
        def test_fails():
            time.sleep(0.002)
            assert False
        @pytest.mark.skip(reason="no")
        def test_skipped(): pass
        def test_skips_inside(): pytest.skip("later")
        @pytest.mark.xfail
        def test_xfail(): assert False
        @pytest.mark.xfail
        def test_xpass(): time.sleep(0.002)
        @pytest.fixture
        def broken(): raise RuntimeError
        def test_error(broken): pass
    """)
    pytester.runpytest("--soap", "--soap-save")
    result = pytester.runpytest("--soap", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    tests = {nodeid.split("::")[1]: t for nodeid, t in by_id(report(pytester)).items()}
    assert {name: t["verdict"] for name, t in tests.items()} == {
        "test_fails": "failed", "test_skipped": "skipped", "test_skips_inside": "skipped",
        "test_xfail": "xfailed", "test_xpass": "unchanged", "test_error": "error"}
    assert tests["test_skipped"]["time_s"] is None  # never ran, so nothing measured
    assert tests["test_xpass"]["outcome"] == "xpassed"
    assert report(pytester)["regressions"] == []
    # Only passing tests go into a baseline.
    saved = json.loads((pytester.path / ".soap" / "baseline.json").read_text())["tests"]
    assert [nodeid.split("::")[1] for nodeid in saved] == ["test_xpass"]


def test_threads_and_subprocesses_are_measured(pytester):
    # Each worker writes down the CPU it used itself, so the check needs no clock of its own.
    pytester.makepyfile("""
        import pathlib, subprocess, sys, threading, time
        def burn(name):
            sum(range(3_000_000))
            pathlib.Path(name).write_text(str(time.thread_time()))
        def test_thread():
            t = threading.Thread(target=burn, args=("thread.cpu",))
            t.start(); t.join()
        def test_subprocess():
            code = "import time; sum(range(5_000_000)); open('child.cpu', 'w').write(str(time.process_time()))"
            subprocess.run([sys.executable, "-c", code], check=True)
    """)
    assert pytester.runpytest("--soap", "--soap-json", "report.json").ret == 0
    tests = {nodeid.split("::")[1]: t for nodeid, t in by_id(report(pytester)).items()}
    # CPU time covers other threads and waited-for children, not only the test's own thread.
    assert tests["test_thread"]["cpu_s"] >= float((pytester.path / "thread.cpu").read_text())
    assert tests["test_subprocess"]["cpu_s"] >= float((pytester.path / "child.cpu").read_text())


def test_a_test_that_allocates_a_gibibyte(pytester):
    pytester.makepyfile("""
        def test_big():
            data = b"x" * 2**30
            assert len(data) == 2**30
    """)
    result = pytester.runpytest_subprocess("--soap", "--soap-json", "report.json")
    assert result.ret == 0
    big = report(pytester)["tests"][0]
    assert 1000 < big["peak_mb"] < 1100
    # Resident growth can fall a few pages short of the GiB (some were resident before the call).
    result.stdout.re_match_lines([r".*(1\.00 GiB|102\d\.\d MiB).*test_big"])


def test_parametrised_ids_with_odd_characters_match_their_baseline(pytester):
    pytester.makepyfile("""
        import time, pytest
        @pytest.mark.parametrize("x", ["a b", "ü", "x::y/[z]", "tab\\there", "quote'\\""])
        def test_odd(x):
            time.sleep(0.002)
    """)
    pytester.runpytest("--soap", "--soap-save")
    saved = json.loads((pytester.path / ".soap" / "baseline.json").read_text())["tests"]
    assert len(saved) == 5
    assert pytester.runpytest("--soap", "--soap-json", "report.json").ret == 0
    tests = report(pytester)["tests"]
    assert sorted(t["nodeid"] for t in tests) == sorted(saved)
    assert all(t["verdict"] != "new" for t in tests)


def test_xdist_workers_measure_and_the_controller_gathers(project):
    pytest.importorskip("xdist")
    result = project.runpytest_subprocess("-n", "2", "--soap", "--soap-save")
    assert result.ret == 0
    saved = json.loads((project.path / ".soap" / "baseline.json").read_text())["tests"]
    assert sorted(saved) == ["test_work.py::test_memory", "test_work.py::test_slowed", "test_work.py::test_steady"]
    knobs(project, slow=10)
    # What is checked is the plumbing, on a 10x change. The line sits at 3x: with two workers and a busy core on
    # two cores, the unchanged 10 ms test_steady was once saved at 4.8 ms (the run-queue correction read 5 ms
    # high; see README, "What is measured") and flagged at 2.10x.
    result = project.runpytest_subprocess("-n", "2", "--soap", "--soap-json", "report.json", "--soap-threshold=200")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    data = report(project)
    assert data["regressions"] == ["test_work.py::test_slowed"]
    assert by_id(data)["test_work.py::test_slowed"]["runs"] >= 5  # the worker re-ran its suspect


def test_marker_overrides_per_test(project):
    project.makepyfile(test_work=TESTS.replace(
        "def test_slowed", "import pytest\n    @pytest.mark.soap(threshold=2000)\n    def test_slowed").replace(
        "def test_memory", "@pytest.mark.soap(skip=True)\n    def test_memory"))
    project.runpytest("--soap", "--soap-save")
    knobs(project, slow=10, mem_mb=30)
    result = project.runpytest("--soap", "--soap-json", "report.json")
    assert result.ret == 0, result.stdout.str()
    tests = by_id(report(project))
    assert tests["test_work.py::test_slowed"]["verdict"] == "unchanged"  # 10x is under a 2000% threshold
    assert tests["test_work.py::test_memory"]["verdict"] == "excluded"


def test_a_misspelt_marker_argument_is_a_usage_error(pytester):
    pytester.makepyfile("""
        import pytest
        @pytest.mark.soap(treshold=5)
        def test_a(): pass
    """)
    result = pytester.runpytest("--soap")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *test_a: @pytest.mark.soap takes threshold=, memory_threshold= and skip= only"])


def test_every_option_has_an_ini_key(project):
    project.makeini("""
        [pytest]
        soap = true
        soap_baseline = perf/base.json
        soap_threshold = 2000
        soap_memory_threshold = 2000
        soap_json = perf/report.json
    """)
    assert project.runpytest("--soap-save").ret == 0
    assert (project.path / "perf" / "base.json").exists()
    knobs(project, slow=10, mem_mb=30)
    result = project.runpytest()
    assert result.ret == 0, result.stdout.str()
    assert report(project, "perf/report.json")["regressions"] == []
    # The command line wins over the ini file.
    assert project.runpytest("--soap-threshold", "10").ret == pytest.ExitCode.TESTS_FAILED


def test_bad_option_values_are_usage_errors(project):
    result = project.runpytest("--soap", "--soap-threshold", "ten")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --soap-threshold (ini soap_threshold) must be a number, not 'ten'"])


def test_time_only_mode_measures_no_memory(project):
    assert project.runpytest("--soap", "--soap-memory", "off", "--soap-json", "report.json").ret == 0
    result_tests = report(project)["tests"]
    assert all(t["peak_mb"] is None and t["tmu_mbs"] is None for t in result_tests)
    assert all(t["time_s"] > 0 for t in result_tests)


def test_pytest_benchmark_statistics_give_the_time(pytester):
    pytest.importorskip("pytest_benchmark")
    pytester.makepyfile("""
        import time
        def test_bench(benchmark):
            benchmark.pedantic(time.sleep, args=(0.002,), rounds=5)
    """)
    result = pytester.runpytest("--soap", "--soap-json", "report.json", "--benchmark-json", "bench.json")
    assert result.ret == 0
    entry = report(pytester)["tests"][0]
    assert entry["timer"] == "pytest-benchmark"
    # The median round, not the whole call with its five rounds and calibration.
    assert entry["time_s"] == pytest.approx(report(pytester, "bench.json")["benchmarks"][0]["stats"]["median"])


def test_a_suspect_that_fails_when_re_run_is_flaky_not_judged(pytester):
    pytester.makepyfile(test_flaky="""
        import pathlib, time
        def test_flaky():
            if not pathlib.Path("gate").exists():
                return            # fast while the baseline is saved
            runs = pathlib.Path("runs.txt")
            count = int(runs.read_text()) + 1 if runs.exists() else 1
            runs.write_text(str(count))
            time.sleep(0.1)       # slow in the gate: a suspect
            assert count < 2      # that fails when re-run to confirm
    """)
    pytester.runpytest("--soap", "--soap-save")
    (pytester.path / "gate").touch()
    result = pytester.runpytest("--soap", "--soap-json", "report.json")
    assert result.ret == 0, result.stdout.str()
    entry = report(pytester)["tests"][0]
    assert entry["verdict"] == "flaky"
    assert entry["runs"] == 1  # the failed rerun's figures are dropped
    assert report(pytester)["regressions"] == []


def test_an_interrupted_save_writes_no_baseline(pytester):
    pytester.makepyfile("""
        def test_first(): pass
        def test_interrupt(): raise KeyboardInterrupt
    """)
    result = pytester.runpytest_subprocess("--soap", "--soap-save")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["interrupted: the baseline was not saved"])
    assert not (pytester.path / ".soap" / "baseline.json").exists()


def test_a_baseline_from_another_machine_is_flagged_in_the_header(project):
    project.runpytest("--soap", "--soap-save")
    path = project.path / ".soap" / "baseline.json"
    data = json.loads(path.read_text())
    data["machine"]["node"] = "some-other-runner"
    path.write_text(json.dumps(data))
    result = project.runpytest("--soap")
    result.stdout.fnmatch_lines(["baseline .soap?baseline.json: *some-other-runner*",
                                 "*the baseline comes from another machine or Python*"])


def test_an_unwritable_json_report_is_one_clear_line(project):
    (project.path / "blocker").write_text("a file where the folder should be")
    result = project.runpytest("--soap", "--soap-json", "blocker/report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["pytest-soap: cannot write the JSON report *blocker?report.json: *"])


def test_a_call_never_reads_shorter_than_its_time_on_a_cpu(monkeypatch):
    """The run-queue wait comes from the scheduler's clock; when it claims the whole call was spent queued
    (seen once in a duet: a 1.3 ms call read 0.0 s), the call still ran for its CPU time."""
    from pytest_soap import measure

    waits = iter([0.0, 10.0])  # at the start, then "queued for 10 s" at the end
    monkeypatch.setattr(measure, "_run_queue_wait", lambda: next(waits))
    meter = measure.CallMeter(memory=False)
    token = meter.start()
    sum(i * i for i in range(300_000))  # a few ms on a CPU
    sample = meter.stop(token)
    meter.close()
    assert sample.time_s >= sample.cpu_s * 0.9 > 0

