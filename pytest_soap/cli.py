"""The `soap` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .eval import PROFILES, TIMEOUT_S


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soap", description="pytest-soap: a performance gate for pytest")
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
    merge.add_argument("output", type=Path, metavar="OUT.json")
    merge.add_argument("reports", type=Path, nargs="+", metavar="SHARD.json")
    ev = commands.add_parser("eval", help="the SOAP paper's measurements on EffiBench-format problems (default: the "
                                          "20 bundled ones), round by round")
    ev.add_argument("dataset", type=Path, nargs="?", metavar="DATASET",
                    help="EffiBench records, JSON or JSONL (default: the bundled examples/eval/problems.jsonl)")
    ev.add_argument("--model", help="the model to ask (default: see pytest --help, --soap-model)")
    ev.add_argument("--iterations", type=int, default=5, help="rounds of the loop (default 5, as the paper)")
    ev.add_argument("--profile", choices=PROFILES, default="both",
                    help="what the model sees of the profile: both line reports (default), time or memory only, "
                         "the totals only (summary), or none: the paper's ablations")
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
    args = parser.parse_args(argv)
    if args.command == "eval":
        from .eval.command import run

        return run(args)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo()
    if args.command == "action":
        from .github.action import run

        return run()
    if args.command in ("report", "merge"):
        return report_command(args)
    return optimize_command(args)


def report_command(args: argparse.Namespace) -> int:
    """`soap report` (one report, read the same way as a shard) and `soap merge`; 2 for a bad file."""
    from .merge import MergeError, load_report, merge_files, write
    from .report.markdown import render

    try:
        report = load_report(args.report) if args.command == "report" else merge_files(args.reports)
        if args.command == "report":
            print(render(report))
            return 0
        write(args.output, report)
    except MergeError as e:
        print(f"soap {args.command}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"soap merge: cannot write {args.output}: {e.strerror}", file=sys.stderr)
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

    path, sep, qualname = args.target.rpartition("::")
    file = Path(path).resolve()
    root = project_root(Path.cwd().resolve())
    if not sep or not qualname or not file.is_file() or not file.is_relative_to(root):
        print(f"soap optimize: {args.target!r} is not PATH::QUALNAME with PATH a file in {root}", file=sys.stderr)
        return 2
    try:
        provider = llm.provider_for(None)
    except llm.ModelUnavailable as e:
        print(f"soap optimize: {e}", file=sys.stderr)
        return 1
    target = Target(root, file.relative_to(root).as_posix(), qualname, tuple(args.tests))
    planned = [session.Planned(target, ["time_s", "peak_mb"], "no gate run: make it cheaper in time or memory")]
    run = session.run(planned, provider, args.model or DEFAULT_MODEL, max(1, args.iterations),
                      Thresholds(time_pct=args.threshold, memory_pct=args.threshold), root, args.apply,
                      lambda line: print(line, flush=True))
    print("\n".join(loop_lines(run)))
    if args.json:
        args.json.write_text(json.dumps({"optimizations": [o.to_dict() for o in run.optimizations],
                                         "patch": str(run.patch) if run.patch else None}, indent=1) + "\n")
    return 0 if any(o.status == "accepted" for o in run.optimizations) else 1


if __name__ == "__main__":
    sys.exit(main())
