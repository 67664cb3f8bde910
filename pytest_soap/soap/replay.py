"""Replay recorded calls into the target as this tree has it, and compare with what the original did.

    python -m pytest_soap.soap.replay RECORDS FILE::QUALNAME --out RESULT.json [--keep RECORDS]

Run from the sandbox's tree (FILE is relative to it) with the PYTHONPATH scrubbed_env sets. Each call gets
fresh arguments from the records; the call must return an equal value (see `same`) or raise the same type
of exception, and leave its arguments equal to the original's after-state. The first difference stops the
replay. RESULT.json is {"checked": N, "skipped": K, "mismatch": null | "call 3 of 12, ...", "error": null | "..."}.
With --keep, differences do not stop it: the calls that compared the same are written there as records
(run against the original, this drops calls that depended on their test's context).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pickle
import sys
from pathlib import Path

from .record import Records, TargetError, exception_name, message_of, module_file, resolve_function, split_target

SHORT = 100  # characters of a value's repr in a mismatch


def same(a: object, b: object) -> bool:
    """Equal as results: recursively through lists, tuples, dicts, sets and frozensets, floats within
    rel 1e-9 / abs 1e-12 (NaN equals NaN), other objects by ==, or by their pickles when their class
    leaves == to identity or == cannot answer. Types must match (3 is not 3.0) except among floats."""
    try:
        return _same(a, b)
    except RecursionError:  # a structure that contains itself, or nests deeper than the stack
        return _same_pickles(a, b)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, (set, frozenset)):
        if a == b:
            return True
        # Floats that differ in the last digits are different set members: match what is left pairwise.
        only_a, only_b = [x for x in a if x not in b], [y for y in b if y not in a]
        return len(a) == len(b) and len(only_a) == len(only_b) and _match_all(only_a, only_b)
    return _same_objects(a, b)


def _match_all(left: list, right: list) -> bool:
    unmatched = list(right)
    for x in left:
        match = next((i for i, y in enumerate(unmatched) if _same(x, y)), None)
        if match is None:
            return False
        unmatched.pop(match)
    return True


def _same_objects(a: object, b: object) -> bool:
    if type(a).__eq__ is not object.__eq__:
        try:
            equal = a == b
            if equal is not NotImplemented:
                return bool(equal)
        except Exception:
            pass  # an == that raises, or answers with something that is not a truth value (an array)
    return _same_pickles(a, b)


def _same_pickles(a: object, b: object) -> bool:
    try:
        return pickle.dumps(a, pickle.HIGHEST_PROTOCOL) == pickle.dumps(b, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False


def short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<a {type(value).__name__} without a repr>"
    return text if len(text) <= SHORT else text[:SHORT - 3] + "..."


def _call_text(qualname: str, args: tuple, kwargs: dict) -> str:
    shown = [short(arg) for arg in args] + [f"{key}={short(value)}" for key, value in kwargs.items()]
    text = f"{qualname}({', '.join(shown)})"
    return text if len(text) <= 2 * SHORT else text[:2 * SHORT - 4] + "...)"


def _exception_text(name: str, message: str) -> str:
    kind = name.rsplit(".", 1)[-1]
    return f"{kind}: {message}" if message else kind


def _outcome_difference(expected_returned: object, expected_raised: tuple[str, str] | None,
                        result: object, raised: BaseException | None) -> str | None:
    if raised is not None:
        got = _exception_text(exception_name(type(raised)), message_of(raised))
        if expected_raised is None:
            return f"raised {got} where the original returned {short(expected_returned)}"
        if exception_name(type(raised)) != expected_raised[0]:
            return f"raised {got} where the original raised {_exception_text(*expected_raised)}"
        return None
    if expected_raised is not None:
        return f"returned {short(result)} where the original raised {_exception_text(*expected_raised)}"
    if not same(result, expected_returned):
        return f"returned {short(result)} where the original returned {short(expected_returned)}"
    return None


def _mutation_difference(expected: tuple[tuple, dict], actual: tuple[tuple, dict], method: bool) -> str | None:
    (expected_args, expected_kwargs), (args, kwargs) = expected, actual
    for position, (want, got) in enumerate(zip(expected_args, args)):
        if not same(got, want):
            name = "self" if method and position == 0 else f"argument {position}"
            return f"left {name} as {short(got)} where the original left {short(want)}"
    for key, want in expected_kwargs.items():
        if not same(kwargs.get(key), want):
            return f"left argument {key!r} as {short(kwargs.get(key))} where the original left {short(want)}"
    return None


def load_records(path: Path, file: str, qualname: str) -> Records:
    try:
        with open(path, "rb") as handle:
            records = pickle.load(handle)
    except Exception as exc:
        raise TargetError(f"cannot read the records {path}: {type(exc).__name__}: {message_of(exc)}") from None
    if not isinstance(records, Records) or (records.file, records.qualname) != (file, qualname):
        raise TargetError(f"{path} holds no records of {file}::{qualname}")
    return records


def load_target(records: Records, root: Path):
    """The target as this tree defines it, imported by the name the recording used; (function, is_method)."""
    sys.path.insert(0, str(root / records.import_root))
    try:
        module = importlib.import_module(records.module)
    except Exception as exc:
        raise TargetError(f"could not import {records.module}: {type(exc).__name__}: {message_of(exc)}") from None
    if module_file(module) != (root / records.file).resolve():
        raise TargetError(f"{records.module} was imported from {module_file(module)}, not from this tree's {records.file}")
    owner, _, raw, function = resolve_function(module, records.qualname)
    return function, isinstance(owner, type) and not isinstance(raw, staticmethod)


def replay(records: Records, function, method: bool, keep: bool) -> tuple[dict, Records]:
    """Play every call; the result for RESULT.json, and the records of the calls that compared the same."""
    kept = Records(records.file, records.qualname, records.module, records.import_root, skipped=records.skipped)
    checked, mismatch = 0, None
    for number, call in enumerate(records.calls, 1):
        try:
            args, kwargs = pickle.loads(call.args)
            after = pickle.loads(call.after)
            returned = pickle.loads(call.returned) if call.returned is not None else None
        except Exception:  # a class the test module defined, which is not importable here
            kept.skipped += 1
            continue
        shown = _call_text(records.qualname, args, kwargs)  # before the call, which may mutate them
        result, raised = None, None
        try:
            result = function(*args, **kwargs)
        except MemoryError:
            raise  # the memory limit, not a behaviour: the sandbox reports it as such
        except (Exception, SystemExit) as exc:
            raised = exc
        difference = _outcome_difference(returned, call.raised, result, raised) \
            or _mutation_difference(after, (args, kwargs), method)
        if difference is None:
            checked += 1
            kept.calls.append(call)
        elif keep:
            kept.skipped += 1
        else:
            checked += 1
            mismatch = f"call {number} of {len(records.calls)}, {shown}: {difference}"
            break
    return {"checked": checked, "skipped": kept.skipped, "mismatch": mismatch, "error": None}, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_soap.soap.replay", description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("target", metavar="FILE::QUALNAME")
    parser.add_argument("--out", type=Path, required=True, help="where to write the result (JSON)")
    parser.add_argument("--keep", type=Path, help="write the records of the calls that compared the same here")
    options = parser.parse_args(argv)
    try:
        file, qualname = split_target(options.target)
        records = load_records(options.records, file, qualname)
        function, method = load_target(records, Path.cwd())
        result, kept = replay(records, function, method, keep=options.keep is not None)
    except TargetError as exc:
        result, kept = {"checked": 0, "skipped": 0, "mismatch": None, "error": str(exc)}, None
    if options.keep is not None and kept is not None:
        with open(options.keep, "wb") as handle:
            pickle.dump(kept, handle, pickle.HIGHEST_PROTOCOL)
    options.out.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
