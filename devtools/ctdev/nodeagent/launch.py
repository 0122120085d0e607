"""Turning a container's command into a local process: the path-mapping approach.

There are no containers here, so a process sees the host's filesystem. Instead of mounting
volumes, the agent rewrites *paths*: every container path under a ``volumeMount`` (and a
few implicit ones: the Redis image's ``/data`` work dir, ``/tmp``, the image's
``/usr/local/bin/redis-*`` binaries) is replaced by its materialised host path wherever it
appears as a path (at the start of an argument, after ``=`` or whitespace, in a shell script,
in a config file), never inside a longer path. Host paths under the agent's state directory
are never rewritten again, so rewriting is idempotent.

- ``redis-server``/``valkey-server`` (also via the image's ``docker-entrypoint.sh`` and the
  empty-command default) run ``/usr/bin/redis-server``. A config file argument is copied to
  the container's run directory with mount paths (and ``include`` files, recursively) and
  Service names rewritten; ``--bind <podIP> --daemonize no --supervised no --logfile ""
  --pidfile ""`` are appended (later options win in Redis), ``--port`` stays as configured.
- ``redis-cli``/``valkey-cli`` talk to the pod's own address where a pod would use its
  loopback (no ``-h``, or ``-h localhost``/``127.0.0.1``).
- ``sh -c``/``bash -c`` scripts run with ``/bin/sh``/``/bin/bash``; the script text is
  rewritten, and a shim directory first on ``PATH`` sends ``redis-server``, ``redis-cli``
  and ``docker-entrypoint.sh`` inside the script through the same rewriting
  (``python -m ctdev.nodeagent.shim``, which reads this module's ``LaunchContext``).
- Service host names (see ``names``) are rewritten to addresses from ``LaunchContext.hosts``.

Pure apart from copying config files into ``LaunchContext.run_dir``.
"""

from __future__ import annotations

import json
import os
import re

from . import names

SERVERS = {"redis-server", "valkey-server"}
SENTINELS = {"redis-sentinel", "valkey-sentinel"}
CLIS = {"redis-cli", "valkey-cli"}
ENTRYPOINTS = {"docker-entrypoint.sh"}
SHELLS = {"sh": "/bin/sh", "ash": "/bin/sh", "dash": "/bin/sh", "bash": "/bin/bash"}
SHIMMED = sorted(SERVERS | SENTINELS | CLIS | ENTRYPOINTS)
"""Programs that get a shim on the PATH of pod processes."""
LOCAL_ALIASES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "[::1]"}
_CLI_VALUE_OPTS = {
    "-p",
    "-s",
    "-a",
    "-r",
    "-i",
    "-n",
    "-d",
    "-D",
    "--user",
    "--pass",
    "--sni",
    "--cacert",
    "--cacertdir",
    "--cert",
    "--key",
    "--tls-ciphers",
    "--tls-ciphersuites",
    "--eval",
    "--pattern",
    "--quoted-pattern",
    "--count",
    "--memkeys-samples",
    "--rdb",
    "--functions-rdb",
    "--pipe-timeout",
    "--intrinsic-latency",
    "--lru-test",
    "-e",
}
CONTEXT_ENV = "CTDEV_LAUNCH_CONTEXT"
"""Environment variable naming the JSON ``LaunchContext`` file of a pod process."""


def image_kind(image: str) -> str:
    """``redis`` (redis/valkey images), ``demo`` (cachetier/demo-app) or ``none``."""
    repo = image.split("@", 1)[0]
    head, _, last = repo.rpartition("/")
    last = last.split(":", 1)[0]
    repo = f"{head}/{last}" if head else last
    if last in ("redis", "valkey"):
        return "redis"
    if repo == "cachetier/demo-app" or repo.endswith("/cachetier/demo-app"):
        return "demo"
    return "none"


class LaunchContext:
    """What a container's commands need to run locally (saved as JSON for the shim).

    A plain class rather than a dataclass: the shim imports this module for every
    ``redis-cli`` in a probe script, and ``dataclasses`` doubles its start-up time.
    """

    FIELDS = ("pod_ip", "mounts", "keep", "hosts", "run_dir", "redis_server", "redis_cli")

    def __init__(
        self,
        pod_ip: str,
        mounts: list[tuple[str, str]] | None = None,
        keep: list[str] | None = None,
        hosts: dict[str, str] | None = None,
        run_dir: str = "",
        redis_server: str = "/usr/bin/redis-server",
        redis_cli: str = "/usr/bin/redis-cli",
    ) -> None:
        self.pod_ip = pod_ip
        """The pod's address: Redis binds it, redis-cli talks to it."""
        self.mounts = sorted(
            ((c.rstrip("/") or "/", h) for c, h in mounts or [] if c.rstrip("/")),
            key=lambda m: len(m[0]),
            reverse=True,
        )
        """(container path, host path) pairs, longest container path first."""
        self.keep = list(keep or [])
        """Host path prefixes that are never rewritten (the agent's state directory)."""
        self.hosts = dict(hosts or {})
        """Service host names found in the pod's config, resolved to addresses."""
        self.run_dir = run_dir
        """Where rewritten copies of config files are written."""
        self.redis_server = redis_server
        """The local redis-server binary."""
        self.redis_cli = redis_cli
        """The local redis-cli binary."""
        alternatives = "|".join(re.escape(c) for c, _ in self.mounts)
        keep_re = "|".join(re.escape(k) for k in self.keep if k)
        parts = []
        if keep_re:
            parts.append(rf"(?P<keep>(?<![\w.-])(?:{keep_re})[^\s\"'`;,)]*)")
        if alternatives:
            parts.append(rf"(?<![\w./-])(?P<mount>{alternatives})(?=[/\s\"'`;:,)]|$)")
        self._pattern = re.compile("|".join(parts)) if alternatives else None
        self._by_path = dict(self.mounts)

    def _replace(self, m: re.Match[str]) -> str:
        mount = m.group("mount")
        return m.group(0) if mount is None else self._by_path[mount]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the context as JSON."""
        with open(path, "w") as fh:
            json.dump({k: getattr(self, k) for k in self.FIELDS}, fh)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LaunchContext:
        """Read a context written by ``save``."""
        with open(path) as fh:
            data = json.load(fh)
        data["mounts"] = [tuple(m) for m in data.get("mounts", [])]
        return cls(**{k: v for k, v in data.items() if k in cls.FIELDS})

    def map_path(self, path: str) -> str:
        """The host path for a container path (unchanged when under no mount)."""
        if any(path.startswith(k) for k in self.keep if k):
            return path
        for cpath, hpath in self.mounts:
            if path == cpath:
                return hpath
            if path.startswith(cpath + "/"):
                return hpath + path[len(cpath) :]
        return path

    def rewrite(self, text: str) -> str:
        """Rewrite mount paths and Service host names in free text (args, scripts, configs)."""
        if self._pattern is not None:
            text = self._pattern.sub(self._replace, text)
        return names.rewrite(text, self.hosts)


def prepare_conf(conf: str, ctx: LaunchContext, seen: set[str] | None = None) -> str:
    """Copy a Redis config file with paths and host names rewritten; returns the copy's path."""
    seen = set() if seen is None else seen
    source = ctx.map_path(conf)
    if conf == "-" or not os.path.isfile(source) or not ctx.run_dir or source in seen:
        return source
    seen.add(source)
    with open(source, errors="replace") as fh:
        text = fh.read()
    lines = []
    for line in ctx.rewrite(text).splitlines():
        words = line.split()
        if len(words) == 2 and words[0].lower() == "include":
            line = f"include {prepare_conf(words[1], ctx, seen)}"
        lines.append(line)
    os.makedirs(ctx.run_dir, exist_ok=True)
    target = os.path.join(ctx.run_dir, f"{len(seen)}-{os.path.basename(source)}")
    with open(target, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return target


def redis_server_argv(args: list[str], ctx: LaunchContext) -> list[str]:
    """Local argv for ``redis-server ARGS``."""
    rest = list(args)
    argv = [ctx.redis_server]
    if rest and not rest[0].startswith("-"):
        argv.append(prepare_conf(rest.pop(0), ctx))
    argv += [ctx.rewrite(a) for a in rest]
    argv += ["--bind", ctx.pod_ip, "--daemonize", "no", "--supervised", "no"]
    return [*argv, "--logfile", "", "--pidfile", ""]


def _local_host(host: str, ctx: LaunchContext) -> str:
    return ctx.pod_ip if host in LOCAL_ALIASES else ctx.hosts.get(host, host)


def redis_cli_argv(args: list[str], ctx: LaunchContext) -> list[str]:
    """Local argv for ``redis-cli ARGS``: the pod's loopback is the pod's address."""
    out = [ctx.redis_cli]
    has_host = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "-u") and i + 1 < len(args):
            value = args[i + 1]
            if arg == "-h":
                value = _local_host(value, ctx)
            else:
                value = re.sub(
                    r"(?<=[@/])(localhost|127\.0\.0\.1|0\.0\.0\.0)(?=[:/]|$)", ctx.pod_ip, value
                )
                value = ctx.rewrite(value)
            out += [arg, value]
            has_host = True
            i += 2
        elif arg in _CLI_VALUE_OPTS and i + 1 < len(args):
            out += [arg, ctx.rewrite(args[i + 1])]
            i += 2
        elif arg.startswith("-"):
            out.append(arg)
            i += 1
        else:
            break
    out += [ctx.rewrite(a) for a in args[i:]]
    if not has_host:
        out[1:1] = ["-h", ctx.pod_ip]
    return out


def local_argv(argv: list[str], ctx: LaunchContext) -> list[str]:
    """The local command for a container's (already ``$(VAR)``-expanded) argv."""
    if not argv:
        return [ctx.redis_server, "--bind", ctx.pod_ip]
    prog, rest = os.path.basename(argv[0]), argv[1:]
    if prog in ENTRYPOINTS:
        if not rest or rest[0].startswith("-") or rest[0].endswith(".conf"):
            rest = ["redis-server", *rest]
        return local_argv(rest, ctx)
    if prog in SERVERS:
        return redis_server_argv(rest, ctx)
    if prog in SENTINELS:
        return redis_server_argv([*rest, "--sentinel"], ctx)
    if prog in CLIS:
        return redis_cli_argv(rest, ctx)
    if prog in SHELLS:
        return [SHELLS[prog], *(ctx.rewrite(a) for a in rest)]
    return [ctx.map_path(argv[0]), *(ctx.rewrite(a) for a in rest)]


def redis_container_argv(command: list[str], args: list[str], ctx: LaunchContext) -> list[str]:
    """Local argv for a redis/valkey image: ``command`` + ``args``, or the image's default."""
    if command:
        return local_argv([*command, *args], ctx)
    return local_argv(["docker-entrypoint.sh", *(args or ["redis-server"])], ctx)


def find_host_names(texts: list[str]) -> set[str]:
    """Candidate Service names in the given texts (env values, args, config files)."""
    found: set[str] = set()
    for text in texts:
        found |= names.find(text)
    return found
