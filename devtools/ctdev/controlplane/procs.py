"""Processes: free ports, /proc lookups, and stopping a process group for good."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .common import HOST, NODE_AGENT


def free_ports(count: int, preferred: Sequence[int] = ()) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1, reusing ``preferred`` if free."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sockets.append(sock)
            want = preferred[i] if i < len(preferred) else 0
            try:
                sock.bind((HOST, want))
            except OSError:
                sock.bind((HOST, 0))
            sock.listen(1)
            ports.append(int(sock.getsockname()[1]))
    finally:
        for sock in sockets:
            sock.close()
    return ports


def proc_cmdline(pid: int) -> list[str] | None:
    """Command line of a live (non-zombie) process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] in "ZX":
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_component(pid: int, name: str) -> bool:
    """True if ``pid`` is alive and is the component ``name`` (guards against pid reuse)."""
    argv = proc_cmdline(pid)
    if not argv:
        return False
    if name == NODE_AGENT or name.startswith(NODE_AGENT + "-"):
        return "ctdev.nodeagent" in argv
    return Path(argv[0]).name == name


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def terminate_pid(pid: int, proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM the process group led by ``pid``, wait, then SIGKILL what is left."""

    def signal_group(sig: int) -> None:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def gone(wait: float) -> bool:
        deadline = time.monotonic() + wait
        while True:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
                if proc.returncode is not None:
                    return True
            elif proc_cmdline(pid) is None:
                return True
            else:
                time.sleep(0.1)
            if time.monotonic() > deadline:
                return False

    signal_group(signal.SIGTERM)
    if not gone(grace):
        signal_group(signal.SIGKILL)
        gone(5.0)
    # Children left in the group (e.g. the node agent's processes) get a short grace.
    deadline = time.monotonic() + 5.0
    while group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for member in group_members(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in "ZX" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members
