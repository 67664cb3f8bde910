"""The sandbox's wall: real sandboxes of a real git project, a loopback listener and a folder outside, and
candidates that are correct and escape each in their own way. Nothing gets out, each is stopped with its reason,
and a clean candidate after them passes; a project whose own tests start programs and write temporary files
keeps working behind it."""

import json
import socket
import textwrap
import threading

import pytest

from pytest_soap.soap import Target, sandbox as sandbox_module
from pytest_soap.soap.llm import AnthropicProvider
from pytest_soap.soap.loop import Optimization, optimize
from pytest_soap.soap.loopback import MessagesServer
from pytest_soap.soap.sandbox import Sandbox, run_pytest
from pytest_soap.soap.session import final_check

from projects import UNIQUE, git_project  # tests/projects.py

WORK = "import sys\n\n\n" + UNIQUE

TESTS = '''\
from pkg.work import unique


def test_unique():
    assert unique([3, 1, 3, 2, 1]) == [3, 1, 2]
'''

CLEAN = '''\
import sys


def unique(items):
    return list(dict.fromkeys(items))
'''

# Each is correct (the test passes with it) and reaches outside, hiding its failure where it can.
ESCAPES = {
    "urllib": ("""
        import urllib.request
        try:
            urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=2)
        except Exception:
            pass
        """, "it looked up the network address 127.0.0.1:{port}, which the original does not"),
    "http.client": ("""
        import http.client
        try:
            http.client.HTTPConnection("127.0.0.1", {port}, timeout=2).request("GET", "/")
        except Exception:
            pass
        """, "it looked up the network address 127.0.0.1:{port}, which the original does not"),
    "raw socket": ("""
        import socket
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", {port}))
        except Exception:
            pass
        """, "it opened a network connection to 127.0.0.1:{port}, which the original does not"),
    "pathlib": ("""
        import pathlib
        pathlib.Path("{outside}/pathlib.txt").write_text("x")
        """, "it opened {outside}/pathlib.txt for writing, which the original does not"),
    "open": ("""
        with open("{outside}/open.txt", "a") as f:
            f.write("x")
        """, "it opened {outside}/open.txt for writing, which the original does not"),
    "io": ("""
        import io
        io.FileIO("{outside}/io.txt", "w").close()
        """, "it opened {outside}/io.txt for writing, which the original does not"),
    "a shell through sys.modules": ("""
        sys.modules["o" + "s"].system("touch {outside}/shell.txt")
        """, "it started the program sh (os.system), which the original does not"),
    "a program through multiprocessing": ("""
        import multiprocessing
        try:
            multiprocessing.get_context("spawn").Process(target=print).start()
        except Exception:
            pass
        """, "it started the program python"),
    "a thread that acts after the call returns": ("""
        import threading, time
        threading.Thread(target=lambda: (time.sleep(0.2), open("{outside}/thread.txt", "w"))).start()
        """, "it started a thread, which the original does not"),
    "an atexit handler": ("""
        import atexit
        atexit.register(lambda: open("{outside}/atexit.txt", "w"))
        """, "it opened {outside}/atexit.txt for writing, which the original does not"),
    "the environment": ("""
        sys.modules["o" + "s"].environ["PATH"] = "{outside}"
        """, "it changed the environment variable PATH, which the original does not"),
    "native code": ("""
        import ctypes
        ctypes.CDLL("libc.so.6").system(b"touch {outside}/native.txt")
        """, "it loaded native code from"),
}


class Listener:
    """A loopback TCP listener that counts the connections it accepts."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        # Wake the blocked accept and wait for the thread before the descriptor is freed: a thread still about
        # to call accept on a closed descriptor's number once took a later test's model server's connection.
        self.server.shutdown(socket.SHUT_RDWR)
        self.thread.join()
        self.server.close()


@pytest.fixture
def listener():
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture
def hook_alone(monkeypatch):
    """No network namespace: the audit hook alone must hold."""
    monkeypatch.setattr(sandbox_module, "network_namespace", lambda: ((), "turned off for this test"))


def escaping(code: str, **where) -> str:
    """The clean revision with `code` run on each call."""
    body = textwrap.indent(textwrap.dedent(code).format(**where).strip(), "    ")
    return CLEAN.replace("def unique(items):\n", f"def unique(items):\n{body}\n")


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_each_escape_is_stopped_with_its_reason_and_a_clean_candidate_after_it_passes(tmp_path, listener, hook_alone,
                                                                                       escape):
    root, outside = tmp_path / "project", tmp_path / "outside"
    outside.mkdir()
    git_project(root, WORK, TESTS)
    code, reason = ESCAPES[escape]
    where = {"port": listener.port, "outside": outside}
    with Sandbox(root) as box:
        assert run_pytest(box, [], 60, 1024).status == "passed"  # the original's run: what it does is recorded
        box.write("pkg/work.py", escaping(code, **where))
        stopped = run_pytest(box, [], 60, 1024)
        box.write("pkg/work.py", CLEAN)
        clean = run_pytest(box, [], 60, 1024)
    assert stopped.status == "refused" and stopped.reason.startswith(reason.format(**where)), stopped.reason
    assert listener.accepted == 0 and list(outside.iterdir()) == []
    assert clean.status == "passed", clean.reason


def test_the_network_namespace_stops_what_the_hook_cannot_see(tmp_path, listener):
    """A program the original's tests start too (python) runs without the hook: only the namespace holds it."""
    if not sandbox_module.network_namespace()[0]:
        pytest.skip(f"no network namespace on this system: {sandbox_module.network_namespace()[1]}")
    root = tmp_path / "project"
    tests = TESTS + textwrap.dedent('''
        import subprocess, sys

        def test_a_program():
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        ''')
    git_project(root, WORK, tests)
    child = (f"import socket; s = socket.socket(); s.settimeout(2); "
             f"print('reached' if s.connect_ex(('127.0.0.1', {listener.port})) == 0 else 'no network')")
    reaching = escaping(f"""
        import subprocess
        print(subprocess.run([sys.executable, "-c", {child!r}], capture_output=True, text=True).stdout)
        assert False, "shown"
        """)
    with Sandbox(root) as box:
        assert run_pytest(box, [], 60, 1024).status == "passed"
        assert "no network" in box.containment()
        box.write("pkg/work.py", reaching)
        run = run_pytest(box, ["tests/test_work.py::test_unique"], 60, 1024)
    assert run.status == "failed" and listener.accepted == 0, run.reason


def test_the_report_says_how_candidates_are_contained(tmp_path, monkeypatch):
    root = tmp_path / "project"
    git_project(root, WORK, TESTS)
    with Sandbox(root) as box:
        assert box.containment().startswith("not yet known")
        run_pytest(box, [], 60, 1024)
        monkeypatch.setattr(sandbox_module, "network_namespace", lambda: ((), "unshare --net failed: Operation not permitted"))
        assert box.containment().endswith("no network namespace here (unshare --net failed: Operation not permitted)")
        box.capabilities["network"] = "opened a network connection to 127.0.0.1:8080"
        assert "the network stays, as the original's tests use it" in box.containment()


# The original already uses each of these, so the static tripwire lets the escapes below through: the wall is
# what stops them.
CAPABLE = '''\
import pathlib
import sys
import threading
import urllib.request


def fetch(url):
    return urllib.request.urlopen(url).read()


def save(path, text):
    pathlib.Path(path).write_text(text)


def shell(command):
    return sys.modules["os"].system(command)


def later(work):
    threading.Thread(target=work).start()


''' + UNIQUE

LARGE_TESTS = TESTS + '''

def test_unique_on_a_large_list():
    assert unique(list(range(1500, 0, -1)) * 2) == list(range(1500, 0, -1))
'''


def revision(body: str) -> str:
    code = "def unique(items):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n    return list(dict.fromkeys(items))\n"
    return f"Faster.\n\n```python\n{code}```\n"


def test_the_loop_rejects_escapes_with_the_walls_reason_and_the_patch_is_checked_once_more(tmp_path, listener, hook_alone):
    root, outside = tmp_path / "project", tmp_path / "outside"
    outside.mkdir()
    git_project(root, CAPABLE, LARGE_TESTS)
    script = [
        revision(f"""
            try:
                urllib.request.urlopen("http://127.0.0.1:{listener.port}/", timeout=2)
            except Exception:
                pass"""),
        revision(f'pathlib.Path("{outside}/loop.txt").write_text("x")'),
        revision(f'sys.modules["os"].system("touch {outside}/shell.txt")'),
        revision(f'threading.Thread(target=lambda: save("{outside}/thread.txt", "x")).start()'),
        revision(""),
    ]
    target = Target(root, "pkg/work.py", "unique", ("tests/test_work.py::test_unique",
                                                    "tests/test_work.py::test_unique_on_a_large_list"),
                    race=("tests/test_work.py::test_unique_on_a_large_list",))
    with MessagesServer(script) as server:
        provider = AnthropicProvider(api_key="sk-test", base_url=server.url, timeout=10, max_retries=0)
        opt = optimize(target, provider, "claude-test", len(script), ["time_s"], "time 100×")
    rounds = [(c.status, c.reason) for c in opt.candidates]
    assert [status for status, _ in rounds] == ["rejected"] * 4 + ["accepted"], rounds
    assert [reason for _, reason in rounds[:4]] == [
        f"the sandbox's wall stopped it: it looked up the network address 127.0.0.1:{listener.port}, which the original does not",
        f"the sandbox's wall stopped it: it opened {outside}/loop.txt for writing, which the original does not",
        "the sandbox's wall stopped it: it started the program sh (os.system), which the original does not",
        "the sandbox's wall stopped it: it started a thread, which the original does not"]
    assert listener.accepted == 0 and list(outside.iterdir()) == []
    assert "the sandbox's wall stopped it: it started the program sh" in json.dumps(server.requests[-1].body)
    assert opt.sandbox.startswith("an audit hook stops anything of a kind the original's tests do not do")

    final_check(root, [opt])
    assert opt.status == "accepted" and opt.final_check.startswith("passed: its covering tests ran again")
    # A revision that slipped past the loop is dropped by the final check, with the wall's reason.
    opt.revised = opt.revised.replace("    return list(dict.fromkeys(items))",
                                      f'    open("{outside}/late.txt", "w")\n    return list(dict.fromkeys(items))')
    final_check(root, [opt])
    assert (opt.status, opt.revised, opt.diff()) == ("rejected", None, "")
    assert opt.reason == f"the final check failed: it opened {outside}/late.txt for writing, which the original does not"
    assert list(outside.iterdir()) == []


def test_the_final_check_keeps_the_revisions_that_pass_together_and_drops_the_one_that_escapes(tmp_path, hook_alone):
    root, outside = tmp_path / "project", tmp_path / "outside"
    outside.mkdir()
    git_project(root, WORK, TESTS)
    (root / "pkg" / "other.py").write_text("def total(xs):\n    return sum(x for x in xs)\n")
    (root / "tests" / "test_other.py").write_text("from pkg.other import total\n\ndef test_total():\n    assert total([1, 2]) == 3\n")
    with Sandbox(root) as box:  # what the originals' tests do, as each loop's first run records it
        run_pytest(box, [], 60, 1024)
    escaping_total = f"def total(xs):\n    open({str(outside / 'total.txt')!r}, 'w')\n    return sum(xs)\n"
    kept = [Optimization("pkg/work.py", "unique", "accepted", tests=["tests/test_work.py"], original=WORK, revised=CLEAN,
                         capabilities=box.capabilities, checks={"tests": ["tests/test_work.py"]}),
            Optimization("pkg/other.py", "total", "accepted", tests=["tests/test_other.py"],
                         original=(root / "pkg" / "other.py").read_text(), revised=escaping_total,
                         capabilities=box.capabilities, checks={"tests": ["tests/test_other.py"]})]
    final_check(root, kept)
    assert [o.status for o in kept] == ["accepted", "rejected"]
    assert kept[0].final_check == "passed: its covering tests ran again with the revision in the tree, behind the sandbox's wall"
    assert kept[1].reason == f"the final check failed: it opened {outside / 'total.txt'} for writing, which the original does not"
    assert kept[1].diff() == "" and list(outside.iterdir()) == []


def test_a_project_that_starts_programs_and_writes_temporary_files_keeps_working(tmp_path, hook_alone):
    root = tmp_path / "project"
    programs = textwrap.dedent('''
        import os, subprocess, sys, tempfile, threading

        def test_programs_files_and_threads(tmp_path):
            assert unique([2, 2]) == [2]
            (tmp_path / "out.txt").write_text("x")
            with tempfile.NamedTemporaryFile("w") as f:
                f.write("y")
            assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True).stdout == "1\\n"
            os.environ["WORK_MODE"] = "fast"
            thread = threading.Thread(target=print)
            thread.start()
            thread.join()
        ''')
    git_project(root, WORK, LARGE_TESTS + programs)
    target = Target(root, "pkg/work.py", "unique", ("tests/test_work.py::test_programs_files_and_threads",
                                                    "tests/test_work.py::test_unique_on_a_large_list"),
                    race=("tests/test_work.py::test_unique_on_a_large_list",))
    with MessagesServer([revision("")]) as server:
        provider = AnthropicProvider(api_key="sk-test", base_url=server.url, timeout=10, max_retries=0)
        opt = optimize(target, provider, "claude-test", 1, ["time_s"], "time 100×")
    assert opt.status == "accepted", [(c.status, c.reason) for c in opt.candidates]
    assert {"process:python", "thread", "environment:WORK_MODE"} <= set(opt.capabilities)
    # Its temporary files are in the sandbox's folder: writing them is no escape, for it or for a candidate.
    assert not [seen for seen in opt.capabilities.values() if "out.txt" in seen or "pytest-of-" in seen]
    # What the original does, a candidate may do too; something new of the same kind is still refused.
    with Sandbox(root, opt.capabilities) as box:
        box.write("pkg/work.py", escaping("""sys.modules["o" + "s"].environ["OTHER"] = "1" """))
        other = run_pytest(box, [], 60, 1024)
    assert other.reason == "it changed the environment variable OTHER, which the original does not"


def test_the_profile_behind_the_wall_works_with_plugin_autoloading_off(tmp_path, monkeypatch):
    # Then our plugin is not autoloaded: the profiler's own imports (memray, line_profiler, which load ctypes)
    # must still be among what the original's run did, through the check's own plugin.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    root = tmp_path / "project"
    git_project(root, WORK, LARGE_TESTS)
    target = Target(root, "pkg/work.py", "unique", ("tests/test_work.py::test_unique_on_a_large_list",))
    with MessagesServer([revision("")]) as server:
        provider = AnthropicProvider(api_key="sk-test", base_url=server.url, timeout=10, max_retries=0)
        opt = optimize(target, provider, "claude-test", 1, ["time_s"], "time 100×")
    assert opt.status == "accepted" and "profile" in opt.checks["seconds"], opt.reason
