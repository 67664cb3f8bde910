"""EffiBench's record format, read with a one-line error for every bad record, and the programs it implies.

A record: `problem_idx`, `task_name`, `markdown_description` or `description` (the first when both are
there, as the SOAP code prompts with it), `canonical_solution`, `small_test_cases` (public tests, shown to
the model), `test_case` (hidden tests, which score every round), and an optional `completion` (the initial
code; without one the model writes it from the description). The code defines
`class Solution`; the tests are statements that call `solution.<method>(...)` and assert on the results.
A program is, as in EffiBench's own scripts, the prelude of imports and the ListNode/TreeNode classes, the
code, `solution = Solution()` and the tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("problem_idx", "task_name", "canonical_solution", "small_test_cases", "test_case")
DESCRIPTIONS = ("markdown_description", "description")  # the first a record has is the task's text
LFS_POINTER = "version https://git-lfs.github.com/spec/"

# The harness's prelude, as EffiBench's and the SOAP code's scripts put it before every program
# (src/code_efficiency_calculator.py in both): these lines in this order, the star imports first (a later
# one shadows an earlier one's names: operator's pow over math's), then TreeNode, then ListNode.
PRELUDE = '''\
from typing import *
from bisect import *
from collections import *
from copy import *
from datetime import *
from heapq import *
from math import *
from re import *
from string import *
from random import *
from itertools import *
from functools import *
from operator import *

import string
import re
import datetime
import collections
import heapq
import bisect
import copy
import math
import random
import itertools
import functools
import operator


class TreeNode:
    def __init__(self, val=0, left=None, right=None, next=None):
        self.val = val
        self.left = left
        self.right = right
        self.next = next


class ListNode:
    def __init__(self, val=0, next=None):
        self.val = val
        self.next = next
'''


class DatasetError(Exception):
    """Why a dataset cannot be read, in one line."""


@dataclass(frozen=True)
class Problem:
    idx: int
    name: str
    description: str
    canonical: str
    public_tests: str
    hidden_tests: str
    completion: str | None = None
    description_field: str = "description"  # the record's field the description came from (DESCRIPTIONS)

    @property
    def method(self) -> str:
        """The Solution method the tests call first: the loop's target."""
        found = re.search(r"\bsolution\.([A-Za-z_]\w*)\s*\(", self.public_tests + "\n" + self.hidden_tests)
        if not found:
            raise DatasetError(f"problem {self.idx} ({self.name}): its tests never call solution.<method>(...)")
        return found.group(1)


def module(code: str) -> str:
    """The module the loop optimises: the prelude, then the code."""
    return f"{PRELUDE}\n\n{code.rstrip()}\n"


def with_tests(module_text: str, tests: str) -> str:
    """A module with `tests` run against it, as EffiBench runs them."""
    return f"{module_text.rstrip()}\n\n\nsolution = Solution()\n{tests.rstrip()}\n"


def program(code: str, tests: str) -> str:
    """The whole program that runs `tests` against `code`."""
    return with_tests(module(code), tests)


def load(path: Path) -> list[Problem]:
    """Every record of a JSON list or JSONL file, in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text") from None
    if text.startswith(LFS_POINTER):
        raise DatasetError(_lfs_pointer(text, path))
    records = _records(text, path)
    if not records:
        raise DatasetError(f"{path} holds no problems")
    problems = [_problem(record, path, n) for n, record in enumerate(records, 1)]
    seen: set[int] = set()
    for p in problems:
        if p.idx in seen:
            raise DatasetError(f"{path}: problem_idx {p.idx} appears twice")
        seen.add(p.idx)
    return problems


def _lfs_pointer(text: str, path: Path) -> str:
    """What a Git LFS pointer stands for (a clone without `git lfs` holds these for the dataset files)."""
    fields = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    size = fields.get("size", "")
    of = f" for a file of {int(size):,} bytes" if size.isdigit() else ""
    return (f"{path} is a Git LFS pointer{of}, not the dataset: run `git lfs pull` in its repository "
            "(or download the dataset from Hugging Face, DONG19/EffiBench)")


def _records(text: str, path: Path) -> list:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except ValueError as e:
            raise DatasetError(f"{path} is not valid JSON: {e}") from None
        return records
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as e:
                raise DatasetError(f"{path}, line {number}, is not a JSON record: {e}") from None
    return records


def _problem(record, path: Path, n: int) -> Problem:
    if not isinstance(record, dict):
        raise DatasetError(f"{path}: record {n} is not a JSON object")
    described = [key for key in DESCRIPTIONS if key in record]
    missing = [key for key in REQUIRED if key not in record] + ([" or ".join(DESCRIPTIONS)] if not described else [])
    if missing:
        raise DatasetError(f"{path}: record {n} lacks {', '.join(missing)} (EffiBench's format needs "
                           f"{', '.join(REQUIRED)} and {' or '.join(DESCRIPTIONS)})")
    texts = [key for key in (*REQUIRED[1:], described[0]) if not isinstance(record[key], str)]
    completion = record.get("completion")
    if completion is not None and not isinstance(completion, str):
        texts.append("completion")
    if texts:
        raise DatasetError(f"{path}: record {n}'s {', '.join(texts)} must be text")
    try:
        idx = int(record["problem_idx"])
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: record {n}'s problem_idx is not a number: {record['problem_idx']!r}") from None
    return Problem(idx, record["task_name"], record[described[0]], record["canonical_solution"],
                   record["small_test_cases"], record["test_case"], completion or None, described[0])
