"""The `soap` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soap", description="pytest-soap: a performance gate for pytest")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the gate on the bundled example project, in a temporary directory")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
