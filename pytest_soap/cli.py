"""The `soap` command."""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import os
import select
import sys
from pathlib import Path

from .eval import PROFILES, TIMEOUT_S
from .soap import PROVIDERS


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, where it is handled, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        if not _stdout_unread():
            raise  # another pipe broke: that is a fault to show
        # The reader went away (`soap report r.json | head`): stop quietly, as Unix tools do.
        _stdout_to_devnull()
        # report and merge print once their work is done; any other command was cut off midway.
        return 0 if args.command in ("report", "merge") else 1


def version() -> str:
    try:
        return importlib.metadata.version("pytest-soap")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        from . import __version__

        return __version__


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line, like every other bad input (argparse prints the usage above it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="soap", description="pytest-soap: a performance gate for pytest")
    parser.add_argument("--version", action="version", version=f"soap (pytest-soap) {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="the gate and the SOAP loop on the bundled example project, in a temporary directory")
    opt = commands.add_parser("optimize", help="send one function through the SOAP loop, regression or not")
    opt.add_argument("target", metavar="PATH::QUALNAME", help="e.g. src/pkg/calc.py::total or pkg/calc.py::Cart.total")
    opt.add_argument("--tests", nargs="+", metavar="NODEID", default=[],
                     help="the tests that exercise it (default: the project's whole suite)")
    opt.add_argument("--model", help="the model to ask (default: see pytest --help, --soap-model)")
    opt.add_argument("--iterations", type=int, default=5, help="rounds of the loop (default 5)")
    opt.add_argument("--threshold", type=float, default=10.0, help="the gain in percent a revision must show (default 10)")
    opt.add_argument("--apply", action="store_true", help="write an accepted revision into the working tree")
    opt.add_argument("--json", type=Path, metavar="PATH", help="write the optimisation as JSON")
    commands.add_parser("action", help="the GitHub Action's job: gate a pull request, comment, open an optimisation PR "
                                       "(reads INPUT_* and GITHUB_* from the environment)")
    rep = commands.add_parser("report", help="a JSON report (--soap-json) as Markdown, on standard output")
    rep.add_argument("report", type=Path, metavar="REPORT.json")
    merge = commands.add_parser("merge", help="combine the JSON reports of sharded runs into one")
    # An option, not the first argument: `soap merge s1.json s2.json` used to overwrite s1.json.
    merge.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.json",
                       help="where to write the merged report (not one of the shards)")
    merge.add_argument("reports", type=Path, nargs="+", metavar="SHARD.json")
    ev = commands.add_parser("eval", help="the SOAP paper's measurements on EffiBench-format problems (default: the "
                                          "20 bundled ones), round by round")
    ev.add_argument("dataset", type=Path, nargs="?", metavar="DATASET",
                    help="EffiBench records, JSON or JSONL (default: the bundled examples/eval/problems.jsonl)")
    ev.add_argument("--model", help="the model to ask (default: see pytest --help, --soap-model)")
    ev.add_argument("--provider", choices=PROVIDERS, default=PROVIDERS[0],
                    help="the model's API: anthropic (default; ANTHROPIC_API_KEY) or openai, the OpenAI-compatible "
                         "chat completions API (OPENAI_API_KEY, none needed with --base-url)")
    ev.add_argument("--base-url", metavar="URL",
                    help="the model API's base URL, e.g. http://127.0.0.1:8000/v1 for a local vLLM (default: "
                         "ANTHROPIC_BASE_URL or OPENAI_BASE_URL, else the provider's public endpoint)")
    ev.add_argument("--iterations", type=int, default=5, help="rounds of the loop (default 5, as the paper)")
    ev.add_argument("--profile", choices=PROFILES, default="both",
                    help="what the model sees of the profile: both line reports (default), time or memory only, "
                         "the totals only (summary), or none: the paper's ablations")
    ev.add_argument("--metrics", choices=("exact", "paper"), default="exact",
                    help="how programs are scored: exact (default: warm, in-process, the heap by memray) or paper "
                         "(the paper's harness: a cold process each, its RSS sampled by memory_profiler every 1 ms, "
                         "10 s timeout or a shorter --timeout, the first 100 lines of tests)")
    ev.add_argument("--problems", metavar="IDX,IDX", help="only these problem_idx values")
    ev.add_argument("--limit", type=int, metavar="N", help="only the first N problems")
    ev.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="S",
                    help=f"a program's scoring (its timed samples and its memory-tracked runs) stops after S seconds "
                         f"(default {TIMEOUT_S:g})")
    ev.add_argument("--offline", action="store_true",
                    help="no model: a loopback Messages API answers each problem with its canonical solution "
                         "(checks the whole pipeline; NET and NTMU should end near 1.00)")
    ev.add_argument("--out", type=Path, default=Path("soap-eval"), metavar="DIR",
                    help="where to write table.md, eval.json and metrics.svg (default ./soap-eval)")
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "eval":
        from .eval.command import run as run_eval

        return run_eval(args)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo()
    if args.command == "action":
        from .github.action import run as run_action

        return run_action()
    if args.command == "report":
        return report_command(args)
    if args.command == "merge":
        return merge_command(args)
    return optimize_command(args)


def _stdout_unread() -> bool:
    """Whether standard output is a pipe or socket that nobody reads any more (poll flags it as an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
    except (AttributeError, OSError, ValueError):  # no poll (Windows): trust it was stdout; no descriptor: it was not
        return not hasattr(select, "poll")
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


def _stdout_to_devnull() -> None:
    """Point standard output's descriptor at /dev/null, so that the interpreter's last flush of what is still
    buffered finds no closed pipe and prints no "Exception ignored" at exit."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured or replaced): nothing to point
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def report_command(args: argparse.Namespace) -> int:
    """`soap report`: one report (read the same way as a shard) as Markdown; 2 for a bad file."""
    from .merge import MergeError, load_report
    from .report.markdown import render

    try:
        report = load_report(args.report)
    except MergeError as e:
        print(f"soap report: {e}", file=sys.stderr)
        return 2
    print(render(report))
    return 0


def merge_command(args: argparse.Namespace) -> int:
    """`soap merge -o OUT SHARD...`; 2 for a bad shard, shards that do not match, an output that is one of
    them or that cannot be written, with nothing written."""
    from .merge import MergeError, merge_into

    try:
        report = merge_into(args.output, args.reports)
    except MergeError as e:
        print(f"soap merge: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # reading errors are MergeErrors, so this is the write
        print(f"soap merge: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"soap merge: {len(args.reports)} reports, {len(report['tests'])} tests, "
          f"{len(report['regressions'])} regressed: {args.output}")
    return 0


def optimize_command(args: argparse.Namespace) -> int:
    """0 when a revision was kept, 1 when none was (or the loop could not run), 2 for a bad target."""
    from .compare import Thresholds
    from .measure.functions import project_root
    from .report.terminal import loop_lines
    from .soap import DEFAULT_MODEL, Target, llm, session

    root = project_root(Path.cwd().resolve())
    try:  # the target first: a typo costs neither a key nor a sandbox
        file, qualname = check_target(args.target, root)
    except BadTarget as e:
        print(f"soap optimize: {e}", file=sys.stderr)
        return 2
    try:
        provider = llm.provider_for(None)
    except llm.ModelUnavailable as e:
        print(f"soap optimize: {e}", file=sys.stderr)
        return 1
    target = Target(root, file, qualname, tuple(args.tests))
    planned = [session.Planned(target, ["time_s", "peak_mb"], "no gate run: make it cheaper in time or memory")]
    run = session.run(planned, provider, args.model or DEFAULT_MODEL, max(1, args.iterations),
                      Thresholds(time_pct=args.threshold, memory_pct=args.threshold), root, args.apply,
                      lambda line: print(line, flush=True))
    print("\n".join(loop_lines(run)))
    if args.json:
        args.json.write_text(json.dumps({"optimizations": [o.to_dict() for o in run.optimizations],
                                         "patch": str(run.patch) if run.patch else None}, indent=1) + "\n")
    return 0 if any(o.status == "accepted" for o in run.optimizations) else 1


class BadTarget(Exception):
    """A PATH::QUALNAME that names nothing the loop can revise; the message is one line."""


def check_target(spec: str, root: Path) -> tuple[str, str]:
    """(the file relative to `root`, the qualname) when `spec` names what the loop can revise, found by the
    loop's own rules (candidate.locate). Read from the source alone: nothing of the project is imported."""
    from .soap.candidate import CandidateError, locate

    path, sep, qualname = spec.rpartition("::")
    if not sep or not path or not all(part.isidentifier() for part in qualname.split(".")):
        raise BadTarget(f"{spec!r} is not PATH::QUALNAME (e.g. pkg/calc.py::Cart.total)")
    file = Path(path).resolve()
    if not file.is_file():
        raise BadTarget(f"{spec!r} is not PATH::QUALNAME: there is no file {path}")
    if not file.is_relative_to(root):
        raise BadTarget(f"{spec!r} is not PATH::QUALNAME: {path} is outside the repository {root}")
    try:
        source = file.read_bytes()
        ast.parse(source, filename=path)  # Python's own message for a syntax error
        locate(source.decode("utf-8"), qualname, where=path)
    except OSError as e:
        raise BadTarget(f"{path} cannot be read ({e.strerror})") from None
    except SyntaxError as e:
        raise BadTarget(f"{path} does not parse: line {e.lineno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise BadTarget(f"{path} is not UTF-8, which the loop reads sources as") from None
    except ValueError as e:  # a null byte
        raise BadTarget(f"{path} does not parse: {e}") from None
    except CandidateError as e:
        raise BadTarget(str(e)) from None
    return file.relative_to(root).as_posix(), qualname


if __name__ == "__main__":
    sys.exit(main())
