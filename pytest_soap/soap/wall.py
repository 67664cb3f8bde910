"""The sandbox's wall: an audit hook, first in every sandboxed process, that stops a candidate the moment it
does something of a kind the original's tests never do.

    python wall.py --home DIR --log FILE (--record [--until-closed] | --allow KEY ...) -- -m pytest ARGS...

It is run as a script, by path, and installs the hook before anything of the project's is imported (neither
the project nor a candidate runs first), then runs `-m MODULE` as `python -m` would. It uses the standard
library only.

What it watches (`sys.addaudithook` events), each as a key compared with the original's:
- "network": a socket connected, bound, sent to, or a host looked up;
- "write outside:FOLDER": a file opened for writing, created, removed, renamed, linked or changed outside HOME
  (the sandbox's folder: its tree, its scratch and its temp folder) and /dev/null, compared by folder;
- "process:PROGRAM": a program started (subprocess, os.system, exec, posix_spawn, spawn; "process:fork" for a
  fork): compared by program, so a project whose tests run git does not let a candidate run sh;
- "signal": a signal sent to another process;
- "thread": a thread started, which could act after the call returns, or after the tests end;
- "native code:LIBRARY" or "native code:EVENT": ctypes loading a library, or calling or reading through it;
- "environment:NAME": an environment variable set or unset (pytest's own aside).

With --record (the original's run), each key's first event is written to the log as a JSON line; with
--until-closed too, only until the process raises the event "soap.wall.close", from which on what was recorded
is all it may do (a trusted harness that loads first, then runs programs: `soap eval`'s scorer). Otherwise an
event whose key is not --allow'ed is written to the log, marked refused, and the process ends there with
REFUSED_EXIT: nothing can catch that, in any thread or in an atexit handler, and a candidate's later effects
never happen. An audit hook is not a security boundary (PEP 578): code that reaches native memory can remove
it. The network namespace (sandbox.py) and the static tripwire (candidate.py) stand beside it.
"""

import _posixsubprocess
import _thread
import json
import os
import runpy
import sys

REFUSED_EXIT = 86
HARNESS_VARIABLES = frozenset({"PYTEST_CURRENT_TEST", "PYTEST_VERSION"})  # pytest sets them
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class Wall:
    def __init__(self, home, log_fd, allowed, closes=False):
        self.home = [os.path.realpath(home), "/dev/null"]
        self.log_fd = log_fd
        self.allowed = allowed  # None: record
        self.closes = closes  # whether "soap.wall.close" ends the recording
        self.seen = set()
        self.local = _thread._local()  # what the hook itself does raises events too

    def hook(self):
        """The audit hook: a plain function, as cheap as Python allows, since CPython calls it for every event
        (`builtins.id` included, thousands of times in a deepcopy); a bound method costs twice as much."""
        handlers, local, saw = HANDLERS, self.local, self.saw

        def audit(event, args):
            handler = handlers.get(event)
            if handler is None or getattr(local, "busy", False):
                return
            local.busy = True
            try:
                found = handler(self, event, args)
                if found is not None:
                    saw(*found)
            finally:
                local.busy = False
        return audit

    def saw(self, key, detail):
        if self.allowed is None:
            if key not in self.seen:
                self.seen.add(key)
                self.write({"key": key, "detail": detail})
            return
        if key in self.allowed:
            return
        self.write({"key": key, "detail": detail, "refused": True})
        os._exit(REFUSED_EXIT)  # here and now: an exception could be caught, or raised in a thread nobody joins

    def write(self, record):
        os.write(self.log_fd, (json.dumps(record) + "\n").encode())

    def outside(self, path):
        if isinstance(path, int) or path is None:
            return None  # a file descriptor: its opening was seen
        path = os.path.realpath(os.fsdecode(path))
        if any(path == root or path.startswith(root.rstrip("/") + "/") for root in self.home):
            return None
        return path


def _open(wall, event, args):
    path, mode, flags = args
    writes = bool(flags & WRITE_FLAGS) if isinstance(flags, int) else any(c in (mode or "") for c in "wax+")
    if writes and (where := wall.outside(path)):
        return f"write outside:{os.path.dirname(where)}", f"opened {where} for writing"
    return None


def _changes(*positions):
    """A handler for an event whose arguments at `positions` are paths that it creates, removes or changes."""
    def handler(wall, event, args):
        for i in positions:
            if i < len(args) and (where := wall.outside(args[i])):
                return f"write outside:{os.path.dirname(where)}", f"changed {where} ({event})"
        return None
    return handler


def _address(address):
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return os.fsdecode(address) if isinstance(address, (str, bytes)) else repr(address)


def _network(what):
    def handler(wall, event, args):
        return "network", f"{what} {_address(args[1])}"
    return handler


def _lookup(wall, event, args):
    port = f":{args[1]}" if event == "socket.getaddrinfo" and args[1] is not None else ""
    return "network", f"looked up the network address {os.fsdecode(args[0]) if args[0] else ''}{port}"


def _program(argument):
    """The program an event starts, from its path or argv (a list or a command line)."""
    if isinstance(argument, (list, tuple)):
        argument = argument[0] if argument else ""
    name = os.path.basename(os.fsdecode(argument or ""))
    return name.split()[0] if name.split() else "?"


def _process(index, through=None):
    def handler(wall, event, args):
        program = "sh" if through == "shell" else _program(args[index])
        if event == "subprocess.Popen" and args[0] is None:
            program = _program(args[1])
        return f"process:{program}", f"started the program {program} ({event})"
    return handler


def _fork(wall, event, args):
    return "process:fork", f"forked the process ({event})"


def _close(wall, event, args):
    if wall.closes and wall.allowed is None:
        wall.allowed = frozenset(wall.seen)
    return None


def _thread_started(wall, event, args):
    return "thread", "started a thread"


def _signal(wall, event, args):
    if args[0] in (0, os.getpid()):
        return None
    return "signal", f"sent signal {args[1]} to process {args[0]}"


def _native(wall, event, args):
    if event == "ctypes.dlopen":
        library = os.path.basename(os.fsdecode(args[0])) if args[0] else "the process itself"
        return f"native code:{library}", f"loaded native code from {library} through ctypes"
    return f"native code:{event}", f"reached native code or memory through ctypes ({event})"


def _environment(wall, event, args):
    name = os.fsdecode(args[0])
    if name in HARNESS_VARIABLES:
        return None
    return f"environment:{name}", f"changed the environment variable {name}"


HANDLERS = {
    "open": _open,
    "os.remove": _changes(0), "os.rmdir": _changes(0), "os.mkdir": _changes(0), "os.rename": _changes(0, 1),
    "os.link": _changes(1), "os.symlink": _changes(1), "os.chmod": _changes(0), "os.chown": _changes(0),
    "os.truncate": _changes(0), "os.utime": _changes(0), "os.chflags": _changes(0), "os.lchflags": _changes(0),
    "os.setxattr": _changes(0), "os.removexattr": _changes(0), "shutil.rmtree": _changes(0),
    "socket.connect": _network("opened a network connection to"), "socket.bind": _network("bound a socket to"),
    "socket.sendto": _network("sent a datagram to"), "socket.sendmsg": _network("sent a message to"),
    "socket.getaddrinfo": _lookup, "socket.gethostbyname": _lookup, "socket.gethostbyname_ex": _lookup,
    "socket.gethostbyaddr": _lookup,
    "subprocess.Popen": _process(0), "os.system": _process(0, "shell"), "os.exec": _process(0),
    "os.posix_spawn": _process(0), "os.spawn": _process(1), "soap.fork_exec": _process(0), "pty.spawn": _process(0),
    "os.fork": _fork, "os.forkpty": _fork, "soap.start_thread": _thread_started, "soap.wall.close": _close,
    "os.kill": _signal, "os.killpg": _signal,
    "os.putenv": _environment, "os.unsetenv": _environment,
    **{f"ctypes.{name}": _native for name in ("dlopen", "dlsym", "dlsym/handle", "addressof", "call_function",
                                               "cdata", "cdata/buffer", "create_string_buffer",
                                               "create_unicode_buffer", "string_at", "wstring_at", "set_errno",
                                               "get_errno", "PyObj_FromPtr")},
}


def _audit_starts():
    """CPython 3.11 raises no event when a thread starts, nor when a program is started through
    _posixsubprocess.fork_exec directly (subprocess raises its own first, multiprocessing none): their entries
    raise ours, in the modules and in `threading`, which keeps its own reference."""
    import threading  # runpy imports it anyway

    _posixsubprocess.fork_exec = _audited(_posixsubprocess.fork_exec, "soap.fork_exec", lambda args: args[1][0])
    for module, name in ((_thread, "start_new_thread"), (_thread, "start_joinable_thread"),
                         (threading, "_start_new_thread"), (threading, "_start_joinable_thread")):
        if hasattr(module, name):
            setattr(module, name, _audited(getattr(module, name), "soap.start_thread", lambda args: None))


def _audited(function, event, argument):
    def audited(*args, **kwargs):
        sys.audit(event, argument(args))
        return function(*args, **kwargs)
    return audited


def main(argv):
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    home = options[options.index("--home") + 1]
    log = options[options.index("--log") + 1]
    allowed = None if "--record" in options else frozenset(
        options[i + 1] for i, option in enumerate(options) if option == "--allow")
    if command[:1] != ["-m"] or len(command) < 2:
        raise SystemExit("wall.py runs `-m MODULE ARGS...`")
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # before the hook: the hook only appends
    _audit_starts()
    sys.addaudithook(Wall(home, log_fd, allowed, closes="--until-closed" in options).hook())
    # Everything this script needs was imported above, while its own folder led sys.path; `python -m` puts the
    # working directory there instead, and so does this, only now: a module of the tree named like one of the
    # standard library's imports after the hook is in place, never before.
    sys.path[0] = os.getcwd()
    sys.argv = [command[1], *command[2:]]
    runpy.run_module(command[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
