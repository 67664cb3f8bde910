"""What a `--soap-against` session and the pytest processes measuring its sides say to each other.

Both ends use these dataclasses, so a field added on one side cannot be forgotten on the other. A message
travels as one line of JSON, `{"kind": ..., ...}`: down a warm process's pipes (see Channel), or in the
files a side process reads (its selection) and writes (its measurements or profiles).

The session asks a warm side process:
  Rerun       run these tests again, each so many times in a row   -> Measured
  ProfileRuns profile these tests once each                          -> Profiled
  Duet        run this test, each call at the session's signal      -> Ready, Go (from the session) for
                                                                        each call, then Measured
  Rest        run once each test no Duet asked for                  -> Measured
The side process sends Measured, unasked, once its own first pass is done (none when it runs in duet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .measure.functions import Profile
from .records import Measurement


@dataclass(frozen=True)
class Selection:
    """The tests a side process runs, from its --soap-only file: each so many times in a row (a round), or,
    in a profiling run, once, with memray's profile for those in `memory` (memory-only regressions)."""

    runs: dict[str, int]
    memory: frozenset[str] = frozenset()

    @classmethod
    def profiling(cls, wanted: dict[str, bool]) -> Selection:
        return cls(dict.fromkeys(wanted, 1), frozenset(n for n, memory in wanted.items() if memory))


@dataclass(frozen=True)
class Rerun:
    runs: dict[str, int]


@dataclass(frozen=True)
class ProfileRuns:
    wanted: dict[str, bool]  # node id: profile its memory (memray) rather than its time (cProfile)


@dataclass(frozen=True)
class Duet:
    """Run `nodeid` `times` times in a row, then `following` is pytest's next item (which fixtures to keep):
    before each call say Ready, and start the call at Go, so that both sides' calls run at the same moment."""

    nodeid: str
    following: str | None = None
    times: int = 1


@dataclass(frozen=True)
class Rest:
    """In a duet, after the session's own tests: run once each test the session did not ask for."""


@dataclass(frozen=True)
class Ready:
    nodeid: str


@dataclass(frozen=True)
class Go:
    pass


@dataclass(frozen=True)
class Measured:
    measurements: dict[str, Measurement] = field(default_factory=dict)


@dataclass(frozen=True)
class Profiled:
    profiles: dict[str, Profile] = field(default_factory=dict)


Message = Selection | Rerun | ProfileRuns | Duet | Rest | Ready | Go | Measured | Profiled
KINDS: dict[str, type] = {"selection": Selection, "rerun": Rerun, "profile": ProfileRuns, "duet": Duet,
                          "rest": Rest, "ready": Ready, "go": Go, "measured": Measured, "profiled": Profiled}
_KIND_OF = {cls: kind for kind, cls in KINDS.items()}


class ProtocolError(ValueError):
    """A line that is not a message: cut short by a process that died, or not ours."""


def encode(message: Message) -> str:
    """One line of JSON, without its newline."""
    data: dict = {"kind": _KIND_OF[type(message)]}
    if isinstance(message, Selection):
        data |= {"runs": message.runs, "memory": sorted(message.memory)}
    elif isinstance(message, Measured):
        data["measurements"] = [m.to_dict() for m in message.measurements.values()]
    elif isinstance(message, Profiled):
        data["profiles"] = {nodeid: p.to_dict() for nodeid, p in message.profiles.items()}
    else:
        data |= message.__dict__
    return json.dumps(data)


def decode(line: str) -> Message:
    try:
        data = json.loads(line)
        cls = KINDS[data.pop("kind")]
        if cls is Selection:
            return Selection({str(n): int(c) for n, c in data["runs"].items()}, frozenset(data["memory"]))
        if cls is Measured:
            return Measured({m.nodeid: m for m in map(Measurement.from_dict, data["measurements"])})
        if cls is Profiled:
            return Profiled({nodeid: Profile.from_dict(p) for nodeid, p in data["profiles"].items()})
        return cls(**data)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ProtocolError(f"not a message: {line[:80]!r} ({type(e).__name__})") from None


def write(path: Path, message: Message) -> None:
    from .store import atomic_write  # store imports the measuring stack; this module must stay light to import

    atomic_write(path, encode(message) + "\n")


def read(path: Path) -> Message:
    return decode(path.read_text(encoding="utf-8"))


class Channel:
    """One end of a warm process's two pipes. A peer that has gone, or a line cut short, reads as None: the
    caller then asks the process's exit status and output why."""

    def __init__(self, incoming: TextIO, outgoing: TextIO):
        self.incoming: TextIO | None = incoming
        self.outgoing: TextIO | None = outgoing

    def send(self, message: Message) -> bool:
        """False when the peer has gone (or this end is closed)."""
        try:
            if self.outgoing is None:
                return False
            self.outgoing.write(encode(message) + "\n")
            self.outgoing.flush()
            return True
        except (OSError, ValueError):
            return False

    def receive(self) -> Message | None:
        line = self.incoming.readline() if self.incoming else ""
        if not line:
            return None
        try:
            return decode(line)
        except ProtocolError:
            return None

    def __iter__(self):
        """The messages until the peer closes its end."""
        while (message := self.receive()) is not None:
            yield message

    def close(self) -> None:
        for pipe in (self.outgoing, self.incoming):
            if pipe:
                try:
                    pipe.close()
                except OSError:
                    pass  # a broken pipe: the peer has gone
        self.incoming = self.outgoing = None
