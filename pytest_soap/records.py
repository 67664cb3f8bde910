"""Plain values passed between the stages: what one run of a test measured, and what a test measured in all."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from enum import Enum


class TextEnum(str, Enum):
    """An enum whose members are their strings: `==` with the old text holds, a member hashes as its text (a
    dict keyed by either finds the other), and str(), format(), f-strings and JSON write the value alone, as
    the plain strings did, on every Python this supports (3.12 made format() of a str mixin follow __str__)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Outcome(TextEnum):
    """What pytest said of a test in this session, as the plugin records it."""

    PASSED = "passed"
    XPASSED = "xpassed"
    FAILED = "failed"
    ERROR = "error"  # failed in setup or teardown
    FLAKY = "flaky"  # failed, then passed when run again (--soap-reruns, or the other side of --soap-against)
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    REMOVED = "removed"  # in the baseline, not in this run

    @classmethod
    def read(cls, text: str) -> str:
        """A stored outcome back as its member; a string this version does not know stays as it is."""
        try:
            return cls(text)
        except ValueError:
            return text


# Every figure a test gets, in the units the reports use: seconds, MiB and MiB·s.
METRICS = ("time_s", "cpu_s", "peak_mb", "tmu_mbs")
# CPU time is reported but not gated: wall time already carries a CPU regression,
# and CPU time alone would miss one spent waiting.
GATED_METRICS = ("time_s", "peak_mb", "tmu_mbs")
MEMORY_METRICS = ("peak_mb", "tmu_mbs")
JUDGED_OUTCOMES = (Outcome.PASSED, Outcome.XPASSED)


@dataclass(frozen=True)
class Sample:
    """One run of a test's call phase (fixture setup and teardown are not the test's cost)."""

    time_s: float  # wall time, less the time spent waiting for a CPU that other processes held
    cpu_s: float
    peak_mb: float | None = None
    tmu_mbs: float | None = None
    wait_s: float = 0.0  # that run-queue wait, reported so the raw wall time can be recovered

    def get(self, metric: str) -> float | None:
        return getattr(self, metric)


@dataclass
class Measurement:
    """Everything one test measured in this session: the first run, then any confirmation reruns."""

    nodeid: str
    # An Outcome: a string read back becomes its member, unless this version does not know it (an old report's).
    outcome: str = Outcome.PASSED
    samples: list[Sample] = field(default_factory=list)
    heap: dict | None = None  # memray's exact heap {"peak_mb", "tmu_mbs"}: memory suspects, and every test saved
    timer: str = "wall"  # "pytest-benchmark" when that fixture's statistics gave the time
    # Samples each later fresh process added (--soap-against); before them, the first pass's, its rechecks included.
    rounds: list[int] = field(default_factory=list)
    threshold: float | None = None  # per-test overrides from @pytest.mark.soap
    memory_threshold: float | None = None
    skip: bool = False

    def __post_init__(self) -> None:
        self.outcome = Outcome.read(self.outcome)

    @property
    def judged(self) -> bool:
        return self.outcome in JUDGED_OUTCOMES and bool(self.samples) and not self.skip

    def values(self, metric: str) -> list[float]:
        return [v for v in (s.get(metric) for s in self.samples) if v is not None]

    def figure(self, metric: str) -> float | None:
        """The median over this session's runs: robust to the one run a scheduler hiccup slowed down."""
        values = self.values(metric)
        return statistics.median(values) if values else None

    def round_values(self, metric: str) -> list[float]:
        """The runs of --soap-against's fresh rounds, without the first pass's process, which picked this test
        as a suspect: a sample chosen for being extreme would bias any test it went into, and so would the
        rechecks, from the same process, when the process itself was the extreme. All runs when there were
        no rounds."""
        first = len(self.samples) - sum(self.rounds)
        values = [v for v in (s.get(metric) for s in self.samples[first:] if self.rounds) if v is not None]
        return values or self.values(metric)

    def by_process(self, metric: str) -> list[float]:
        """The median of each process's runs: the first pass (and its rechecks), then each round of --soap-against."""
        medians, start = [], 0
        for size in [len(self.samples) - sum(self.rounds), *self.rounds]:
            values = [v for v in (s.get(metric) for s in self.samples[start:start + size]) if v is not None]
            if values:
                medians.append(statistics.median(values))
            start += size
        return medians

    def figures(self) -> dict[str, float | None]:
        return {metric: self.figure(metric) for metric in METRICS}

    def to_dict(self) -> dict:
        """Plain data: the outcome as a plain str, which execnet (xdist's workeroutput) can send and a subclass not."""
        return asdict(self) | {"outcome": str(self.outcome)}

    @classmethod
    def from_dict(cls, data: dict) -> Measurement:
        data = dict(data)
        data["samples"] = [Sample(**s) for s in data.get("samples", [])]
        return cls(**data)
