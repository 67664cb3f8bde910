"""Check a candidate on the recorded calls, then race it against the best, in one process.

    python -m pytest_soap.soap.race RECORDS FILE::QUALNAME CHAMPION.py --out RESULT.json

Run in a sandbox whose tree holds the candidate (the challenger), as its tests just ran; CHAMPION.py is the
best version so far, the whole module, loaded beside it under the same name. First the differential check:
every recorded call replayed into the challenger must give the original's result, exception and argument
changes (replay.py; the challenger is the tree's module, so the recorded objects are of its classes); a
mismatch ends it. Then both replay the calls: time in rounds that alternate which goes first, so a slow
spell of the machine hits both; then memory, each call's peak under tracemalloc, which would slow the timed
rounds if it ran during them. One process for all of it: no start-ups, and no process drift between the
two; the loop judges the figures with the gate's statistics.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import pickle
import sys
import time
import tracemalloc
import types
from pathlib import Path

from .record import Records, TargetError, message_of, resolve_function, split_target
from .replay import load_records, load_target, replay

# Timed samples a side. 5 and 5 reach p = 0.004, under the gate's 0.01, but only with at most one pair out of
# order: on a shared CI machine a candidate at 0.55x the best was once called no gain. 7 and 7 allow 6; 9 and 9
# (14) made a round of the loop cost 1.02x its target in benchmarks/loop.py.
ROUNDS = 7
SAMPLE_S = 0.005  # a sample repeats the recorded calls until the champion takes this long: the timer's noise is small next to it
MAX_PASSES = 200


def load_beside(records: Records, tree_module: types.ModuleType, source: str):
    """A function from another text of the tree's module: run in a fresh module object with the tree's
    module's name, file and package, so its own imports (relative ones included) resolve as that one's do."""
    module = types.ModuleType(tree_module.__name__)
    module.__file__ = tree_module.__file__
    module.__package__ = tree_module.__package__
    try:
        exec(compile(source, tree_module.__file__, "exec"), module.__dict__)  # in the sandbox only
    except Exception as exc:
        raise TargetError(f"the best version's module does not load: {type(exc).__name__}: {message_of(exc)}") from None
    return resolve_function(module, records.qualname)[3]


def inputs(records: Records) -> list[tuple[tuple, dict]]:
    """A fresh copy of every call's arguments: the target may mutate them."""
    return [pickle.loads(call.args) for call in records.calls]


def one_pass(function, calls: list[tuple[tuple, dict]]) -> None:
    for args, kwargs in calls:
        try:
            function(*args, **kwargs)
        except MemoryError:
            raise
        except Exception:  # the recorded call raised too: the differential check saw to it being the same
            pass


def timed(function, records: Records, passes: int) -> float:
    """Seconds for `passes` passes over the calls, their arguments unpickled beforehand."""
    copies = [inputs(records) for _ in range(passes)]
    gc.collect()
    start = time.perf_counter()
    for calls in copies:
        one_pass(function, calls)
    return time.perf_counter() - start


def peak_mb(function, records: Records) -> float:
    """The largest heap a single call grew by, in MiB (tracemalloc: Python's allocators)."""
    peak = 0
    for args, kwargs in inputs(records):
        gc.collect()
        tracemalloc.start()
        try:
            one_pass(function, [(args, kwargs)])
            peak = max(peak, tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    return peak / 2**20


def race(records: Records, champion, challenger) -> dict:
    # The records, the modules and the replay's objects stay for the whole race: frozen, the collection before
    # each sample walks only what the samples made, not all of them (on the demo, a fifth of a second a sample).
    gc.collect()
    gc.freeze()
    single = timed(champion, records, 1)
    passes = min(MAX_PASSES, max(1, math.ceil(SAMPLE_S / single))) if single > 0 else MAX_PASSES
    times: dict[str, list[float]] = {"champion": [], "challenger": []}
    for number in range(ROUNDS):
        order = (("champion", champion), ("challenger", challenger))
        for name, function in order if number % 2 == 0 else reversed(order):
            times[name].append(timed(function, records, passes) / passes)
    return {"calls": len(records.calls), "passes": passes, "time_s": times,
            "peak_mb": {"champion": peak_mb(champion, records), "challenger": peak_mb(challenger, records)},
            "error": None, "mismatch": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_soap.soap.race", description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("target", metavar="FILE::QUALNAME")
    parser.add_argument("champion", type=Path, help="the best version's whole module")
    parser.add_argument("--out", type=Path, required=True, help="where to write the result (JSON)")
    options = parser.parse_args(argv)
    try:
        file, qualname = split_target(options.target)
        records = load_records(options.records, file, qualname)
        challenger, method = load_target(records, Path.cwd())
        checked, _ = replay(records, challenger, method, keep=False)
        if checked["error"] or checked["mismatch"]:
            result = checked
        else:
            champion = load_beside(records, sys.modules[records.module], options.champion.read_text(encoding="utf-8"))
            result = {**race(records, champion, challenger), "checked": checked["checked"], "skipped": checked["skipped"]}
    except TargetError as exc:
        result = {"error": str(exc), "mismatch": None}
    options.out.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
