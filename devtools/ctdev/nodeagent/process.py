"""Container processes: start in their own session, log to a file, reap in a thread.

Each process gets the marker variable ``CTDEV_NODEAGENT_STATE=<state dir>`` so that a
restarted agent can find and kill processes that a crashed predecessor left behind, and,
where ``setpriv`` exists, a parent-death signal so they do not outlive the agent's thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .log import Log

MARKER_ENV = "CTDEV_NODEAGENT_STATE"
_SETPRIV = shutil.which("setpriv")
_log = Log("nodeagent.process")


class Process:
    """One running container process (the leader of its own process group)."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str,
        log_path: Path,
        on_exit: Callable[[], None],
    ) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        wrapped = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv] if _SETPRIV else argv
        with open(log_path, "ab") as log:
            self._popen = subprocess.Popen(
                wrapped,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.pid = self._popen.pid
        self.argv = argv
        self.started_at = time.time()
        """Wall-clock start time."""
        self.finished_at: float | None = None
        """Wall-clock exit time, once reaped."""
        self.returncode: int | None = None
        """``Popen.returncode`` once reaped (negative: killed by that signal)."""
        self._on_exit = on_exit
        self._done = threading.Event()
        threading.Thread(target=self._reap, name=f"reap-{self.pid}", daemon=True).start()

    def _reap(self) -> None:
        rc = self._popen.wait()
        self.finished_at = time.time()
        self.returncode = rc
        self._done.set()
        self._on_exit()

    @property
    def alive(self) -> bool:
        """Not reaped yet."""
        return not self._done.is_set()

    @property
    def exit_code(self) -> int:
        """Exit code as a container runtime reports it (128+N when killed by signal N)."""
        rc = self.returncode if self.returncode is not None else 0
        return rc if rc >= 0 else 128 - rc

    @property
    def signal(self) -> int | None:
        """The signal that killed the process, if any."""
        rc = self.returncode
        return -rc if rc is not None and rc < 0 else None

    def kill(self, sig: int) -> None:
        """Signal the whole process group (the process and whatever it started)."""
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Wait for exit; True when it exited."""
        return self._done.wait(timeout)


def kill_stale(state_dir: Path) -> int:
    """SIGKILL processes carrying this state directory's marker (left by a previous agent)."""
    marker = f"{MARKER_ENV}={state_dir}".encode() + b"\0"
    killed = 0
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"\0" + marker in b"\0" + environ:
            pid = int(entry.name)
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    if killed:
        _log.warning("killed processes left by a previous agent", count=killed)
    return killed
