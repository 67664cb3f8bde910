"""`soap eval`: read the dataset, pick the model, run every problem, print the table, write the outputs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from .dataset import DESCRIPTIONS, DatasetError, Problem, load

BUNDLED = Path("eval") / "problems.jsonl"


def bundled_dataset() -> Path | None:
    from ..demo import find_examples

    examples = find_examples()
    return examples / BUNDLED if examples is not None and (examples / BUNDLED).exists() else None


def select(problems: list[Problem], only: str | None, limit: int | None) -> list[Problem]:
    if only:
        try:
            wanted = {int(part) for part in only.split(",") if part.strip()}
        except ValueError:
            raise DatasetError(f"--problems takes problem_idx numbers separated by commas, not {only!r}") from None
        unknown = wanted - {p.idx for p in problems}
        if unknown:
            raise DatasetError(f"no problem_idx {', '.join(map(str, sorted(unknown)))} in the dataset")
        problems = [p for p in problems if p.idx in wanted]
    return problems[:limit] if limit is not None else problems


def canonical_server(problems: list[Problem], provider: str = "anthropic"):
    """A loopback model API (the Messages API, or for provider "openai" the chat completions API) that answers
    every request about a problem with its canonical solution."""
    from ..soap.loopback import ChatCompletionsServer, Choose, Forever, MessagesServer
    from .run import task_heading

    canonical = {task_heading(p): p.canonical for p in problems}

    def reply_for(body: dict) -> str:
        asked = json.dumps(body, ensure_ascii=False)
        code = next((code for marker, code in canonical.items() if json.dumps(marker)[1:-1] in asked), None)
        return f"The canonical solution.\n\n```python\n{code.strip()}\n```\n" if code else "I know no such problem."
    server = ChatCompletionsServer if provider == "openai" else MessagesServer
    return server([Forever(Choose(reply_for))])


def run(args: argparse.Namespace) -> int:
    """0 when every problem ran (whatever the model achieved), 2 for a bad dataset, option or missing key."""
    from ..soap import DEFAULT_MODEL, PROVIDERS
    from ..soap.llm import AnthropicProvider, ModelUnavailable, provider_for
    from .metrics import table
    from .report import markdown, record, svg
    from .run import Settings, evaluate

    path = args.dataset or bundled_dataset()
    if path is None:
        print("soap eval: the bundled dataset is missing from this installation; name a DATASET", file=sys.stderr)
        return 2
    if args.iterations < 1 or args.timeout <= 0 or (args.limit is not None and args.limit < 1):
        print("soap eval: --iterations, --timeout and --limit must be positive", file=sys.stderr)
        return 2
    try:
        problems = select(load(path), args.problems, args.limit)
    except DatasetError as e:
        print(f"soap eval: {e}", file=sys.stderr)
        return 2
    if args.provider != PROVIDERS[0] and not (args.model or args.offline):
        print(f"soap eval: --provider {args.provider} needs --model: the name its server gives the model",
              file=sys.stderr)
        return 2
    model = args.model or ("offline-canonical" if args.offline else DEFAULT_MODEL)
    descriptions = ", ".join(sorted({p.description_field for p in problems}, key=DESCRIPTIONS.index))
    settings = Settings(model, args.iterations, args.profile, args.timeout, descriptions=descriptions,
                        metrics=args.metrics)
    if not args.offline:
        try:
            provider = provider_for(None, args.provider, args.base_url)
        except ModelUnavailable as e:
            print(f"soap eval: {e}; --offline runs the pipeline with the canonical solutions as the replies",
                  file=sys.stderr)
            return 2
    try:  # before the problems run, not after: a bad --out must not cost the run
        args.out.mkdir(parents=True, exist_ok=True)
        if not os.access(args.out, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        print(f"soap eval: cannot write to {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    with canonical_server(problems) if args.offline else nullcontext() as server:
        if server is not None:
            provider = AnthropicProvider(api_key="offline", base_url=server.url, max_retries=0)
        results = evaluate(problems, provider, settings, lambda line: print(line, flush=True))
    rows = table(results)
    name = path.name + (" (offline: canonical replies)" if args.offline else "")
    text = markdown(rows, results, settings, name)
    print("\n" + text)
    try:
        (args.out / "table.md").write_text(text, encoding="utf-8")
        (args.out / "eval.json").write_text(json.dumps(record(rows, results, settings, name), indent=1) + "\n",
                                            encoding="utf-8")
        (args.out / "metrics.svg").write_text(svg(rows, f"soap eval: {name}, {settings.model}"), encoding="utf-8")
    except OSError as e:
        print(f"soap eval: cannot write to {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'table.md'}, {args.out / 'eval.json'} and {args.out / 'metrics.svg'}")
    return 0


