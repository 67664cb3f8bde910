"""Settings from the command line, then the ini file, then the defaults; and per-test marker overrides."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from .compare import Thresholds
from .soap import DEFAULT_MODEL, PROVIDERS


@dataclass(frozen=True)
class Option:
    flag: str
    help: str
    default: object = None
    kind: type | tuple[str, ...] = str  # bool, int, float, str, Path, or a tuple of allowed strings
    metavar: str | None = None

    @property
    def ini(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS = [
    Option("--soap", "measure every test's time and memory and compare them with the baseline", False, bool),
    Option("--soap-baseline", "baseline file (default .soap/baseline.json)", ".soap/baseline.json", Path, "PATH"),
    Option("--soap-save", "write this run as the baseline (merged: tests not run keep their figures)", False, bool),
    Option("--soap-threshold", "time regression threshold in percent (default 10)", 10.0, float, "PCT"),
    Option("--soap-memory-threshold", "peak-memory and TMU regression threshold in percent (default 10)", 10.0, float,
           "PCT"),
    Option("--soap-against", "compare with a git ref (branch, tag or sha) measured side by side in this run", None, str,
           "REF"),
    Option("--soap-sides", "with --soap-against: 'duet' runs each test on both sides at the same moment, on two "
           "cores; 'sequential' runs one side's tests, then the other's; 'auto' (default): duet when two cores are "
           "idle", "auto", ("auto", "duet", "sequential"), "MODE"),
    Option("--soap-strict", "with --soap-against: fail the run on unconfirmed tests too (past the line when the "
           "rounds ran out, without the evidence to call them regressed)", False, bool),
    Option("--soap-json", "write a machine-readable report to PATH", None, Path, "PATH"),
    Option("--soap-memory", "memory measurement: 'rss' (default; exact memray heap for suspects) or 'off' (time only)",
           "rss", ("rss", "off"), "MODE"),
    Option("--soap-min-time", "tests faster than this many milliseconds are reported, not gated (default 1)", 1.0,
           float, "MS"),
    Option("--soap-min-memory", "memory changes smaller than this many MiB are not gated (default 1)", 1.0, float,
           "MIB"),
    Option("--soap-rounds", "most runs of a suspect test, the first included (default 5, at least 5)", 5, int,
           "N"),
    Option("--soap-slowest", "how many of the slowest tests the terminal report lists (default 5)", 5, int, "N"),
    Option("--soap-optimize", "send each regressed function through the SOAP loop (needs ANTHROPIC_API_KEY); "
           "accepted revisions go to .soap/optimized.patch", False, bool),
    Option("--soap-apply", "with --soap-optimize: write accepted revisions into the working tree", False, bool),
    Option("--soap-model", f"the model the SOAP loop asks (default {DEFAULT_MODEL})", DEFAULT_MODEL, str, "NAME"),
    Option("--soap-provider", "the model's API: 'anthropic' (default; ANTHROPIC_API_KEY) or 'openai', the "
           "OpenAI-compatible chat completions API of OpenAI, vLLM, Ollama or llama.cpp's server (OPENAI_API_KEY, "
           "none needed with a base URL)", PROVIDERS[0], PROVIDERS, "NAME"),
    Option("--soap-base-url", "the model API's base URL, e.g. http://127.0.0.1:8000/v1 for a local vLLM (default: "
           "ANTHROPIC_BASE_URL or OPENAI_BASE_URL, else the provider's public endpoint)", None, str, "URL"),
    Option("--soap-iterations", "rounds of the SOAP loop per function (default 5)", 5, int, "N"),
    Option("--soap-prior", "with --soap-optimize: revisions an earlier run kept (JSON, as `soap action` writes it); "
           "each is re-verified before the first round and kept unless a new candidate beats it", None, Path, "PATH"),
]


# How a --soap-against session drives the pytest processes that measure each side; not for users.
INTERNAL = [
    Option("--soap-side", "measure only, and write the measurements to PATH", None, Path, "PATH"),
    Option("--soap-only", "run only the tests of the protocol.Selection in PATH", None, Path, "PATH"),
    Option("--soap-profile", "profile each test's functions once, and write the profiles to PATH", None, Path, "PATH"),
    Option("--soap-serve", "after the tests, send the measurements down pipe W and run again what pipe R asks", None, str, "R,W"),
    Option("--soap-duet", "run no test of its own: serve from the start, each test when pipe R asks", None, str, "R,W"),
]


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("soap", "pytest-soap: performance gate")
    for opt in INTERNAL:
        group.addoption(opt.flag, default=None, help=argparse.SUPPRESS)
    for opt in OPTIONS:
        if opt.kind is bool:
            group.addoption(opt.flag, action="store_true", default=None, help=opt.help)
            parser.addini(opt.ini, opt.help, type="bool", default=opt.default)
        else:
            choices = opt.kind if isinstance(opt.kind, tuple) else None
            group.addoption(opt.flag, default=None, metavar=opt.metavar, choices=choices, help=opt.help)
            parser.addini(opt.ini, opt.help, default=None)


def given_flags(config: pytest.Config) -> list[str]:
    """The --soap-* options on the command line: each implies --soap, since ignoring one would pass a gate
    the user asked for. Ini keys do not: they set how the gate runs when it runs."""
    return [opt.flag for opt in OPTIONS[1:] + INTERNAL if config.getoption(opt.ini) is not None]


def _value(config: pytest.Config, opt: Option):
    """The flag if given, else the ini key, else the default; paths resolve against where each was written."""
    given = config.getoption(opt.ini)
    base = config.invocation_params.dir
    if given is None and opt in INTERNAL:
        given = opt.default
    elif given is None:
        given = config.getini(opt.ini)
        base = config.inipath.parent if config.inipath else config.rootpath
        if given in (None, "") or (opt.kind is bool and not given):
            given = opt.default
            base = config.rootpath
    if given is None or opt.kind is bool:
        return bool(given) if opt.kind is bool else None
    if isinstance(opt.kind, tuple):
        if given not in opt.kind:
            raise pytest.UsageError(f"{opt.flag} (ini {opt.ini}) must be one of {', '.join(opt.kind)}, not {given!r}")
        return given
    if opt.kind is Path:
        return (base / Path(str(given)).expanduser()).resolve()
    if opt.kind is str:
        return str(given)
    try:
        number = opt.kind(given)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"{opt.flag} (ini {opt.ini}) must be a number, not {given!r}") from None
    if number < 0:
        raise pytest.UsageError(f"{opt.flag} (ini {opt.ini}) must not be negative, not {given!r}")
    return number


def _pipes(given: str | None) -> tuple[int, int] | None:
    """--soap-serve R,W, which only --soap-against writes."""
    if not given:
        return None
    read, write = (int(fd) for fd in given.split(","))
    return read, write


@dataclass(frozen=True)
class Settings:
    enabled: bool
    baseline: Path
    save: bool
    json: Path | None
    memory: bool
    rounds: int
    slowest: int
    thresholds: Thresholds
    against: str | None = None
    side: Path | None = None  # set in a process measuring one side for a --soap-against session
    only: Path | None = None
    profile: Path | None = None  # set in a process profiling one side's regressed tests for attribution
    serve: tuple[int, int] | None = None  # a side's pipes (read, write) to its --soap-against session
    duet_side: bool = False  # that side runs its tests only when asked, each at the moment the session runs it
    sides: str = "auto"  # --soap-sides
    strict: bool = False  # --soap-strict
    optimize: bool = False
    apply: bool = False
    model: str = DEFAULT_MODEL
    provider: str = "anthropic"  # --soap-provider: one of llm.PROVIDERS
    base_url: str | None = None  # --soap-base-url
    iterations: int = 5
    prior: Path | None = None  # --soap-prior

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        v = {opt.ini: _value(config, opt) for opt in OPTIONS + INTERNAL}
        if v["soap_optimize"] and v["soap_provider"] != PROVIDERS[0] and not (
                config.getoption("soap_model") or config.getini("soap_model")):
            # The default names an Anthropic model: another API's server would answer 404 after the gate ran.
            raise pytest.UsageError(f"--soap-provider {v['soap_provider']} needs --soap-model (ini soap_model): "
                                    "the name its server gives the model")
        return cls(
            enabled=v["soap"] or bool(given_flags(config)),
            baseline=v["soap_baseline"],
            save=v["soap_save"],
            json=v["soap_json"],
            memory=v["soap_memory"] != "off",
            rounds=max(5, v["soap_rounds"]),  # fewer runs can never reach p <= 0.05 in the sign test
            slowest=v["soap_slowest"],
            against=v["soap_against"],
            side=v["soap_side"],
            only=v["soap_only"],
            profile=v["soap_profile"],
            serve=_pipes(v["soap_serve"] or v["soap_duet"]),
            duet_side=bool(v["soap_duet"]),
            sides=v["soap_sides"],
            strict=v["soap_strict"],
            optimize=v["soap_optimize"],
            apply=v["soap_apply"],
            model=v["soap_model"],
            provider=v["soap_provider"],
            base_url=v["soap_base_url"],
            iterations=max(1, v["soap_iterations"]),
            prior=v["soap_prior"],
            thresholds=Thresholds(
                time_pct=v["soap_threshold"],
                memory_pct=v["soap_memory_threshold"],
                min_time_s=v["soap_min_time"] / 1000,
                min_memory_mb=v["soap_min_memory"],
            ),
        )


MARKER = "soap(threshold=None, memory_threshold=None, skip=False): per-test pytest-soap settings"


def marker_overrides(item: pytest.Item) -> dict:
    """threshold / memory_threshold / skip from the closest @pytest.mark.soap, checked."""
    marker = item.get_closest_marker("soap")
    if marker is None:
        return {}
    unknown = set(marker.kwargs) - {"threshold", "memory_threshold", "skip"}
    if unknown or marker.args:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.soap takes threshold=, memory_threshold= and skip= only")
    return dict(marker.kwargs)
