"""A trial's first process: the parent of the trial's command and the reaper of what it leaves.

A process a trial started that left the trial's group (``setsid``, a daemon's double fork) and
cleared its environment (``env -i``) was reached neither by the group kill at the trial's end
nor by the sweeps that find a trial's processes by ``METAOPT_TRIAL_ID``: it held its GPU until
the machine rebooted. This process makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``,
Linux): whatever the trial leaves orphaned is re-parented to it instead of to init, however it
escaped. It starts the command as its child, in a process group of the command's own, and tells
the peer the command's pid, which is that group's id: the peer's stops, kills and watchdog go
to that group and never reach this process. Once the command has exited (killed -9 or not), it
SIGKILLs what is left of the command's group and every process still its child — re-parented
to it, so the trial's — with that process's group, and exits as the command did: with its
code, or killed by its signal. The peer's sweeps by environment (_orphans.py, the watchdog)
leave this process alone (``METAOPT_SUBREAPER`` in its environment, not in the command's): it
ends itself once the command has, and killed at the same time as a stubborn command it would
leave the rest behind. They still find what kept its environment should this process be
killed.

A stop signal sent to this process (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) is
taken and dropped: the peer never sends it one, and what sends one to every process (systemd,
a shutdown, `kill` of them all) reaches the command itself; passed on, it reached the command
twice and ran its handler again inside the first call. It goes on waiting for the command.
While it waits, it reaps whatever else of the trial's ends (a shell's `job &` that finished),
so no zombie holds a pid until the trial's end.

Run as ``python -I path/to/_subreaper.py FD CMD`` (standard library only: it starts in a few
tens of ms; importing the metaopt package would load numpy), or as the peer runs it: this
source as the peer read it at its start, base64 in METAOPT_SUBREAPER_CODE (an environment's
text is in the locale's encoding, which may not hold this file's), run by ``python -I -c``
(the file on disk may be another version's by then: an upgrade under a running peer).

CMD is a file descriptor of an anonymous file holding the command, its arguments separated by
NUL (``command_file``): not on this process's command line, so ``ps``, ``pgrep -f train.py``
and ``kill $(pgrep -of train.py)`` find the command alone, not this process too, which drops
the kill; nor in its environment, whose strings cost the kernel's limits more (an argument
of 128 KiB less a few bytes, or 60,000 arguments, no longer fitted).

FD is the write end of a pipe from the peer: this process writes the command's pid there once
it runs, or ``!`` and why it could not be started (then exits 127), and closes it. A pipe with
no reader left means the peer died or gave up before it heard of the command: the command is
killed.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time

_MARK = "METAOPT_SUBREAPER"  # its own environment's, left out of the command's
_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_REAP_FOR = 5.0  # seconds to wait for what the trial left to die (a process in D state may not)
_STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
          signal.SIGUSR2)  # fmt: skip


def _become_subreaper() -> None:
    # Not Linux, or a Python without ctypes: a plain parent, no more.
    with contextlib.suppress(ImportError, OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def command_file(command: list[str]) -> int:
    """A file descriptor of an anonymous file holding ``command`` for this process (CMD),
    read from its start; the caller closes it once this process has started."""
    data = [os.fsencode(arg) for arg in command]
    if any(b"\0" in arg for arg in data):
        raise ValueError("embedded null byte")  # (as an exec of it says: no argument holds one)
    fd = None
    if hasattr(os, "memfd_create"):
        with contextlib.suppress(OSError):  # (refused: an old kernel, a seccomp policy)
            fd = os.memfd_create("metaopt-trial-command")
    if fd is None:  # (a file unlinked at once)
        import tempfile

        with tempfile.TemporaryFile() as fh:
            fd = os.dup(fh.fileno())
    try:
        view = memoryview(b"\0".join(data))
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_command(fd: int) -> list[bytes]:
    """The command out of ``command_file``'s file, which is then closed."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).split(b"\0")


def _own_environment() -> dict[bytes, bytes]:
    """The environment this process was started with: Python's start-up adds LC_CTYPE to
    os.environ when it coerces a C locale, which -I cannot turn off, and the command would
    inherit it."""
    try:
        with open("/proc/self/environ", "rb") as fh:
            items = fh.read().split(b"\0")
        return dict(item.split(b"=", 1) for item in items if b"=" in item)
    except OSError:
        return dict(os.environb)


def _without_marks(env: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """``env`` less this process's own entries (METAOPT_SUBREAPER*): the command's."""
    return {name: value for name, value in env.items() if not name.startswith(_MARK.encode())}


def _wait_for(pid: int) -> int:
    """Wait for the command to exit, reaping any other child meanwhile; its exit code."""
    while True:
        try:
            done, status = os.waitpid(-1, 0)  # (retried after a signal's handler, PEP 475)
        except ChildProcessError:  # (reaped elsewhere: cannot be, but must not hang)
            return 255
        if done == pid:
            return os.waitstatus_to_exitcode(status)


def _children() -> list[int]:
    """This process's children (the command's leftovers are re-parented here), from /proc."""
    me, found = os.getpid(), []
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    stat = fh.read()
                # The 4th field of stat, after the command in parentheses, is the parent.
                if int(stat[stat.rindex(b")") + 2 :].split()[1]) == me:
                    found.append(int(name))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    return found


def _kill_group(group: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(group, signal.SIGKILL)


def _reap_left(group: int) -> None:
    """SIGKILL the command's group, then every child left (with its group) until none is."""
    _kill_group(group)  # the group outlives its leader while members remain: still the trial's
    mine = os.getpgid(0)
    deadline = time.monotonic() + _REAP_FOR
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass  # (the dead ones, so they are not listed again)
        left = _children()
        if not left or time.monotonic() > deadline:
            return
        for pid in left:
            with contextlib.suppress(OSError):
                group = os.getpgid(pid)
                if group != mine:
                    _kill_group(group)  # what it started too
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)  # their children are re-parented here as they die


def _exit_as(code: int) -> None:
    """End this process the way the command ended."""
    if code >= 0:
        os._exit(code)
    sig = -code
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the command's crash, not ours
    with contextlib.suppress(OSError, ValueError):  # (SIGKILL's cannot be set, nor need be)
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    with contextlib.suppress(OSError, ValueError):
        os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # (a signal whose default does not end a process)


def _ignore(_signum: int, _frame: object) -> None:
    """A stop signal for this process alone: dropped (a handler, not SIG_IGN, which the
    command would inherit through exec)."""


def main(argv: list[str]) -> None:
    status_fd, command = int(argv[0]), _read_command(int(argv[1]))
    env = _without_marks(_own_environment())
    # An ignored SIGCHLD, inherited, has the kernel reap the command: its exit code is lost.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sig in _STOPS:
        if signal.getsignal(sig) != signal.SIG_IGN:  # (ignored stays so, for the command too)
            signal.signal(sig, _ignore)
    _become_subreaper()
    try:
        # (close_fds: the command does not hold the status pipe open)
        child = subprocess.Popen(command, env=env, process_group=0)
    except (OSError, ValueError) as exc:
        why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        with contextlib.suppress(OSError):
            os.write(status_fd, b"!" + why.encode(errors="replace"))
        os._exit(127)
    try:
        os.write(status_fd, b"%d" % child.pid)
        os.close(status_fd)
    except OSError:  # no reader: the peer died or gave up before it heard of the command
        _kill_group(child.pid)
    code = _wait_for(child.pid)
    _reap_left(child.pid)
    _exit_as(code)


if __name__ == "__main__":
    main(sys.argv[1:])
