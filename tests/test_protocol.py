"""The messages between a --soap-against session and its side processes: each survives the trip."""

import os
import threading

import pytest

from pytest_soap import protocol
from pytest_soap.measure.functions import Edge, FunctionCost, Profile
from pytest_soap.records import Measurement, Sample

MEASURED = protocol.Measured({
    "t.py::test_a": Measurement("t.py::test_a", samples=[Sample(0.5, 0.4, 3.0, 1.5, 0.01), Sample(0.6, 0.5)],
                                heap={"peak_mb": 2.0, "mean_mb": 1.0}, rounds=[1], threshold=20.0),
    "t.py::test_b": Measurement("t.py::test_b", outcome="error", skip=True),
})

MESSAGES = [
    protocol.Selection({"t.py::test_a": 3, "t.py::test_b[x\ty]": 1}),
    protocol.Selection.profiling({"t.py::test_a": True, "t.py::test_b": False}),
    protocol.Rerun({"t.py::test_a": 2}),
    protocol.ProfileRuns({"t.py::test_a": False}),
    protocol.Duet("t.py::test_a", "t.py::test_b", times=3),
    protocol.Duet("t.py::test_b"),
    protocol.Rest(),
    protocol.Ready("t.py::test_a"),
    protocol.Go(),
    MEASURED,
    protocol.Measured(),
    protocol.Profiled({"t.py::test_a": Profile(0.8, {"pkg/w.py::f": FunctionCost("pkg/w.py", "f", 3, "project", 0.5, 0.7, 9)},
                                               [Edge("t.py::test_a", "pkg/w.py::f", 0.5, 0.7)],
                                               [(2.5, ["pkg/w.py::f", "t.py::test_a"])], 2.5)}),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_round_trip(message, tmp_path):
    line = protocol.encode(message)
    assert "\n" not in line  # one message, one line, whatever the node ids hold
    assert protocol.decode(line) == message
    protocol.write(tmp_path / "message", message)
    assert protocol.read(tmp_path / "message") == message


def test_a_selection_says_which_tests_memray_profiles():
    selection = protocol.decode(protocol.encode(protocol.Selection.profiling({"a": True, "b": False})))
    assert selection.runs == {"a": 1, "b": 1} and selection.memory == {"a"}


@pytest.mark.parametrize("line", ["", "{", "[]", '{"kind": "shout"}', '{"kind": "rerun"}',
                                  '{"kind": "measured", "measurements": [{"nodeid": "x", "colour": 1}]}',
                                  protocol.encode(MEASURED)[:-20]])
def test_a_line_that_is_not_a_message_is_one_clear_error(line):
    with pytest.raises(protocol.ProtocolError, match=r"^not a message: "):
        protocol.decode(line)


def test_a_channel_carries_messages_both_ways_and_reads_a_gone_peer_as_none():
    (a_read, b_write), (b_read, a_write) = os.pipe(), os.pipe()
    here = protocol.Channel(os.fdopen(a_read, "r"), os.fdopen(a_write, "w"))
    there = protocol.Channel(os.fdopen(b_read, "r"), os.fdopen(b_write, "w"))

    def serve():  # the side process's end: answers each Duet with Ready, then Measured after Go
        for request in there:
            assert isinstance(request, protocol.Duet)
            there.send(protocol.Ready(request.nodeid))
            assert there.receive() == protocol.Go()
            there.send(MEASURED)
        there.close()

    server = threading.Thread(target=serve)
    server.start()
    assert here.send(protocol.Duet("t.py::test_a"))
    assert here.receive() == protocol.Ready("t.py::test_a")
    assert here.send(protocol.Go())
    assert here.receive() == MEASURED
    here.outgoing.close()  # the session is done: the side's loop ends, and it closes its end
    server.join(timeout=10)
    assert here.receive() is None  # gone
    here.close()
    assert not here.send(protocol.Go()) and here.receive() is None  # a closed end neither sends nor reads


def test_a_line_cut_short_by_a_dying_peer_reads_as_none():
    read, write = os.pipe()
    os.write(write, protocol.encode(MEASURED)[:30].encode())
    os.close(write)
    assert protocol.Channel(os.fdopen(read, "r"), open(os.devnull, "w")).receive() is None
