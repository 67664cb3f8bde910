"""Confirm suspects: run each test that crossed a threshold again, in rounds, until its verdict is settled.

Suspects alternate (A B C, A B C, ...) so that a passing slow spell of the machine spreads over all
of them instead of landing on one. A rerun goes through pytest's own run protocol with fresh
fixtures and no reporting, so the terminal and other plugins see each test once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from _pytest.runner import runtestprotocol

from . import compare

if TYPE_CHECKING:
    from .plugin import SoapSession


def run_again(item: pytest.Item) -> bool:
    """Run one test once more (setup, call, teardown); True when every phase passed."""
    if hasattr(item, "_initrequest"):
        item._initrequest()  # drop the fixture values of the earlier run
    reports = runtestprotocol(item, nextitem=None, log=False)
    return all(r.passed for r in reports)


def confirm_suspects(session: pytest.Session, soap: SoapSession) -> None:
    items = {item.nodeid: item for item in session.items}
    baseline, thresholds, rounds = soap.baseline.tests, soap.settings.thresholds, soap.settings.rounds
    pending = [m for m in soap.measurements.values()
               if m.nodeid in items and compare.suspect_metrics(m, baseline.get(m.nodeid), thresholds)]
    suspects = list(pending)
    while pending:
        for m in list(pending):
            before = len(m.samples)
            if not run_again(items[m.nodeid]):
                # The test failed on a rerun: its outcome is flaky, so no performance verdict.
                del m.samples[before:]
                m.outcome = "flaky"
                pending.remove(m)
            elif not compare.undecided(m, baseline[m.nodeid], thresholds, rounds):
                pending.remove(m)
    if not soap.meter.measures_memory:
        return
    # Resident memory found the memory suspects; memray tells their exact heap, once each.
    soap.heap_run = True
    try:
        for m in suspects:
            verdict = compare.judge(m, baseline[m.nodeid], thresholds)
            if m.outcome != "flaky" and {"peak_mb", "tmu_mbs"} & set(verdict.regressed_metrics):
                run_again(items[m.nodeid])
    finally:
        soap.heap_run = False
