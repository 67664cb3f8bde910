"""One side of `--soap-against`: its pytest processes, how they start, and how the session talks to them.

A side runs pytest in a fresh process with the user's command line (less the controlling session's own
options): once, writing its measurements to a file; kept warm, serving requests over two pipes after its
first pass (see protocol); or in duet, running each test only when asked, at the moment the other side does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import protocol
from .measure.functions import Profile
from .records import Measurement

if TYPE_CHECKING:
    from .against import Ref

# How long a warm process may take to finish its session once closed, before it is stopped.
CLOSE_S = 30
# Options of the user's command line that concern the controlling session only.
CONTROL_FLAGS = {"--soap-save"}
CONTROL_OPTIONS = {"--soap-against", "--soap-json", "--soap-baseline", "--soap-prior"}


def side_arguments(args: list[str], drop: tuple[str, ...] = ()) -> list[str]:
    """The user's command line without the options that belong to the controlling session, nor `drop`."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in CONTROL_OPTIONS:
            skip = True  # its value is the next argument
        elif arg not in CONTROL_FLAGS and arg.split("=", 1)[0] not in CONTROL_OPTIONS and arg not in drop:
            kept.append(arg)
    return kept


@dataclass
class Side:
    """How to run pytest on one side: where, with what environment."""

    name: str  # "base" or "head": names its files
    label: str  # the ref or HEAD: names it to the user
    cwd: Path
    rootdir: Path  # where node ids start, on this side
    env: dict[str, str]
    runs: int = 0

    @classmethod
    def base(cls, tree: Path, ref: Ref, invocation_dir: Path, rootdir: Path) -> Side:
        # The worktree's code must be what its tests import, even when the project is installed in
        # editable mode (a .pth or finder pointing at the working tree): PYTHONPATH comes before both.
        paths = [str(tree)] + [str(tree / "src")] * (tree / "src").is_dir()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        def inside(path: Path) -> Path:
            try:
                return tree / path.relative_to(ref.repo_root)
            except ValueError:  # outside the repository: the worktree's root is the best match
                return tree
        return cls("base", ref.name, inside(invocation_dir), inside(rootdir), env)

    @classmethod
    def head(cls, invocation_dir: Path, rootdir: Path) -> Side:
        return cls("head", "HEAD", invocation_dir, rootdir, dict(os.environ))

    def run(self, args: list[str], work: Path, runs: dict[str, int] | None = None) -> tuple[dict[str, Measurement], str | None]:
        """Measure in a fresh pytest process; the measurements, and what went wrong if it did not run.
        With `runs`, the process collects just those tests' files (`args` then holds no paths of its own)
        and runs each test that many times in a row."""
        return self.start(args, work, runs).finish()

    def start(self, args: list[str], work: Path, runs: dict[str, int] | None = None, warm: bool = False,
              duet: bool = False) -> SideRun:
        """The same, in the background: `finish()` waits for it. A `warm` process stays up after its tests,
        to run some of them again when asked (see protocol) until it is closed; a `duet` process runs no test
        of its own, only those asked, each at the moment the session runs it (see DuetPartner)."""
        self.runs += 1
        dump = work / f"{self.name}-{self.runs}.json"
        selection = None if runs is None else protocol.Selection(runs)
        if not (warm or duet):
            return SideRun(self._pytest(args, work, selection, [f"--soap-side={dump}"]), dump, time.perf_counter())
        (ask_r, ask_w), (answer_r, answer_w) = os.pipe(), os.pipe()
        serve = f"--soap-duet={ask_r},{answer_w}" if duet else f"--soap-serve={ask_r},{answer_w}"
        try:
            proc = self._pytest(args, work, selection, [f"--soap-side={dump}", serve], pass_fds=(ask_r, answer_w))
        except BaseException:
            for fd in (ask_w, answer_r):
                os.close(fd)
            raise
        finally:
            os.close(ask_r)
            os.close(answer_w)
        channel = protocol.Channel(os.fdopen(answer_r, "r", encoding="utf-8"), os.fdopen(ask_w, "w", encoding="utf-8"))
        return SideRun(proc, dump, time.perf_counter(), channel)

    def start_profile(self, args: list[str], work: Path, wanted: dict[str, bool]) -> SideRun:
        """One profiled run of each test in `wanted` ({nodeid: memory?}), in a fresh process in the
        background; see SideRun.profiles."""
        self.runs += 1
        dump = work / f"{self.name}-{self.runs}.profiles.json"
        return SideRun(self._pytest(args, work, protocol.Selection.profiling(wanted), [f"--soap-profile={dump}"]),
                       dump, time.perf_counter())

    def _pytest(self, args: list[str], work: Path, selection: protocol.Selection | None, extra: list[str],
                pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        # At this session's -O level: the code either side runs, and the bytecode it reads, must be alike.
        cmd = [sys.executable, *["-O"] * sys.flags.optimize, "-m", "pytest", *args, "--soap", *extra, "-p", "no:cacheprovider"]
        if selection is not None:
            only_file = work / f"{self.name}-{self.runs}.only"
            protocol.write(only_file, selection)
            cmd.append(f"--soap-only={only_file}")
            cmd += sorted({str(self.rootdir / nodeid.split("::")[0]) for nodeid in selection.runs})
        # Its output goes to a file: a pipe nobody reads while the head's tests run would fill and stall it.
        with open(work / f"{self.name}-{self.runs}.out", "wb") as out:
            return subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    pass_fds=pass_fds)


@dataclass
class SideRun:
    """A side's pytest process under way."""

    proc: subprocess.Popen
    dump: Path
    started: float
    channel: protocol.Channel | None = None  # a warm process's pipes (see Side.start)
    seconds: float = 0.0  # its wall time, once finished

    def finish(self) -> tuple[dict[str, Measurement], str | None]:
        """Its measurements once its tests are done, and what went wrong if they did not run."""
        if self.channel:
            measured = self._measured(self.channel.receive())
            self.seconds = time.perf_counter() - self.started
            if measured:
                return measured, None
            self.close()  # no tests, or no answer: the exit status and the output say why
        self.proc.wait()
        self.seconds = time.perf_counter() - self.started
        if not self.dump.exists():
            return {}, self.why()
        reply = protocol.read(self.dump)
        measured = reply.measurements if isinstance(reply, protocol.Measured) else {}
        if self.proc.returncode not in (0, 1) or (not measured and self.proc.returncode != 5):
            return measured, self.why()
        return measured, None

    def ask(self, request: protocol.Message) -> protocol.Message | None:
        """A warm process's answer to a request; None when it has gone (or was closed)."""
        if self.channel is None or not self.channel.send(request):
            return None
        return self.channel.receive()

    def rerun(self, runs: dict[str, int]) -> tuple[dict[str, Measurement], str | None]:
        """A warm process's further runs of each test in `runs`, that many times each."""
        measured = self._measured(self.ask(protocol.Rerun(runs)))
        if measured is None:
            self.close()
            return {}, self.why()
        return measured, None

    def ask_profiles(self, wanted: dict[str, bool]) -> None:
        """Ask a warm process to profile these tests ({nodeid: memory?}); read_profiles() has the answer."""
        if self.channel and not self.channel.send(protocol.ProfileRuns(wanted)):
            self.channel.close()  # it has gone: read_profiles() says so

    def read_profiles(self) -> dict[str, Profile] | None:
        """The answer to ask_profiles(); None when the process has gone."""
        reply = self.channel.receive() if self.channel else None
        return reply.profiles if isinstance(reply, protocol.Profiled) else None

    @staticmethod
    def _measured(reply: protocol.Message | None) -> dict[str, Measurement] | None:
        return reply.measurements if isinstance(reply, protocol.Measured) else None

    def close(self) -> None:
        """Let a warm process finish its session (its pipe closed, it tears its fixtures down and exits);
        stop it if it has not within CLOSE_S seconds."""
        if self.channel:
            self.channel.close()
        self.channel = None
        try:
            self.proc.wait(timeout=CLOSE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def profiles(self) -> dict[str, Profile]:
        """The profiles of the tests that ran, of a run from Side.start_profile."""
        self.proc.wait()
        if not self.dump.exists():
            return {}
        try:
            reply = protocol.read(self.dump)
        except protocol.ProtocolError:
            return {}
        return reply.profiles if isinstance(reply, protocol.Profiled) else {}

    def why(self) -> str:
        """pytest's own account of a run that did not happen: the exception it printed, else its last error line."""
        # The output file is named for the run ("base-3.out"), whatever the dump ("base-3.profiles.json").
        output = (self.dump.parent / f"{self.dump.name.split('.')[0]}.out").read_text(encoding="utf-8", errors="replace")
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        exceptions = [line[1:].strip() for line in lines if line.startswith("E ")]
        errors = [line for line in lines if line.startswith("ERROR")]
        return f"pytest exited {self.proc.returncode}: {(exceptions or errors or lines or ['no output'])[-1]}"


class DuetPartner:
    """The head session's end of a duet with the ref's warm process: for each test the session asks the ref
    to run it too (begin), and when both are set up, starts both calls at once (at_call: the ref's Ready,
    then Go); end() has the ref's measurements. A ref that has gone, or lacks the test, answers at once,
    and the head's test runs alone."""

    def __init__(self, side_run: SideRun):
        self.side_run = side_run
        self.waiting = False  # a Duet asked, its Measured not read yet
        self.reply: dict[str, Measurement] = {}
        self.first_pass: dict[str, Measurement] = {}  # the ref's runs of the session's own loop
        self.paired = 0  # calls that started together

    def begin(self, nodeid: str, following: str | None, times: int = 1) -> None:
        self.reply = {}
        channel = self.side_run.channel
        self.waiting = bool(channel and channel.send(protocol.Duet(nodeid, following, times)))

    def at_call(self) -> None:
        if self.waiting:
            self._step()

    def end(self) -> dict[str, Measurement]:
        while self.waiting:  # calls the head did not make (its setup failed): the ref's run alone
            self._step()
        return self.reply

    def _step(self) -> None:
        channel = self.side_run.channel
        message = channel.receive() if channel else None
        if isinstance(message, protocol.Ready) and channel and channel.send(protocol.Go()):
            self.paired += 1
            return
        self.waiting = False
        self.reply = message.measurements if isinstance(message, protocol.Measured) else {}


def conduct(side_runs: list[SideRun], runs: dict[str, int]) -> list[dict[str, Measurement]]:
    """A round in duet: fresh processes (see Side.start's `duet`) run each test in `runs` that many times,
    each call started on all of them at once (every Ready answered by one Go to all); each one's measurements.
    A process that lacks a test, fails it or has gone answers early, and the others go on without it."""
    replies: list[dict[str, Measurement]] = [{} for _ in side_runs]
    queue = list(runs)
    for nodeid, following in zip(queue, [*queue[1:], None]):
        waiting = [bool(r.channel and r.channel.send(protocol.Duet(nodeid, following, runs[nodeid]))) for r in side_runs]
        while any(waiting):
            messages = [r.channel.receive() if w and r.channel else None for r, w in zip(side_runs, waiting)]
            for i, message in enumerate(messages):
                if isinstance(message, protocol.Ready):
                    continue
                if waiting[i] and isinstance(message, protocol.Measured):
                    replies[i] |= message.measurements
                waiting[i] = False
            for side_run, message in zip(side_runs, messages):
                if isinstance(message, protocol.Ready) and side_run.channel:
                    side_run.channel.send(protocol.Go())
    return replies
