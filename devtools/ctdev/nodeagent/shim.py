"""Entry point of the PATH shims that pod shell scripts call (``redis-server``, ``redis-cli``...).

``python -S -m ctdev.nodeagent.shim redis-server ARGS`` loads the ``LaunchContext`` named
by ``$CTDEV_LAUNCH_CONTEXT``, rewrites the command like the agent does for a container's own
command (see ``launch``), and execs it. Imports only the standard library and pure modules.
"""

from __future__ import annotations

import os
import sys

from .launch import CONTEXT_ENV, LaunchContext, local_argv


def write_shims(shim_dir: str, python: str, pythonpath: str) -> None:
    """Create the shim scripts (idempotent)."""
    from .launch import SHIMMED

    os.makedirs(shim_dir, exist_ok=True)
    for tool in SHIMMED:
        path = os.path.join(shim_dir, tool)
        text = (
            "#!/bin/sh\n"
            f"PYTHONPATH='{pythonpath}' exec '{python}' -S -m ctdev.nodeagent.shim {tool} \"$@\"\n"
        )
        try:
            with open(path) as fh:
                if fh.read() == text:
                    continue
        except OSError:
            pass
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o755)


def main(argv: list[str]) -> int:
    """Exec the local equivalent of ``argv`` (tool name first)."""
    if len(argv) < 1:
        print("usage: shim TOOL [ARGS...]", file=sys.stderr)
        return 2
    path = os.environ.get(CONTEXT_ENV)
    if not path:
        print(f"shim: {CONTEXT_ENV} is not set", file=sys.stderr)
        return 127
    local = local_argv(argv, LaunchContext.load(path))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    os.execve(local[0], local, env)
    return 127  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
