"""Preparing a container start: environment, mount table, Service names, local argv.

Builds the ``LaunchContext`` (see ``launch`` for the path-mapping approach) of one
container: its volumeMounts (with subPath/subPathExpr), implicit per-container
directories (``/tmp``; ``/data``, the Redis image's work dir; ``workingDir``), the image's
``/usr/local/bin/redis-*`` paths pointing at the shims, and the Service names found in
its env, command, args and mounted config files resolved to addresses. Writes the context
as JSON for the shims and creates the directories; otherwise no side effects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import launch as launchmod
from .config import AgentConfig
from .container import ContainerRunner, Launch
from .envres import Lookup, build_env, expand
from .files import VolumeError
from .objects import Obj
from .process import MARKER_ENV

CONFIG_FILE_LIMIT = 256 * 1024
CONFIG_VOLUMES = ("configMap", "secret", "projected")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Prepared:
    """A container start, ready to go."""

    launch: Launch
    ctx: launchmod.LaunchContext
    """Also used for the container's exec probes."""


def read_configs(path: Path) -> list[str]:
    """Small text files under a mount, to look for Service names in them."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    texts = []
    for file in files[:64]:
        try:
            if file.stat().st_size <= CONFIG_FILE_LIMIT:
                texts.append(file.read_text(errors="replace"))
        except OSError:
            continue
    return texts


def prepare_launch(
    pod: Obj,
    runner: ContainerRunner,
    *,
    pod_dir: Path,
    log_dir: Path,
    volume_paths: dict[str, Path],
    config: AgentConfig,
    lookup: Lookup,
    resolve_hosts: Callable[[str, set[str]], dict[str, str]],
) -> Prepared:
    """Everything to start ``runner`` (a redis or demo container) of ``pod`` (with its IP)."""
    spec = runner.spec
    md = pod.get("metadata") or {}
    ip = str((pod.get("status") or {}).get("podIP", ""))
    raw_env = build_env(pod, spec, lookup, config.allocatable)
    work = pod_dir / "rootfs" / runner.name
    mounts: list[tuple[str, str]] = []
    config_texts: list[str] = []
    volumes = {str(v.get("name")): v for v in (pod.get("spec") or {}).get("volumes") or []}
    for vm in spec.get("volumeMounts") or []:
        base = volume_paths.get(str(vm.get("name")))
        if base is None:
            raise VolumeError(f"volume {vm.get('name')} is not set up")
        sub = str(vm.get("subPath") or expand(str(vm.get("subPathExpr") or ""), raw_env))
        host = base / sub if sub else base
        mounts.append((str(vm["mountPath"]), str(host)))
        if any(k in volumes.get(str(vm.get("name")), {}) for k in CONFIG_VOLUMES):
            config_texts += read_configs(host)
    covered = {m[0] for m in mounts}
    implicit = {"/tmp": work / "tmp"}
    if runner.kind == "redis":
        implicit["/data"] = work / "data"
    working_dir = str(spec.get("workingDir") or ("/data" if runner.kind == "redis" else ""))
    if working_dir and working_dir not in implicit:
        implicit[working_dir] = work / working_dir.lstrip("/")
    for cpath, hpath in implicit.items():
        if not any(cpath == c or cpath.startswith(c.rstrip("/") + "/") for c in covered):
            hpath.mkdir(parents=True, exist_ok=True)
            mounts.append((cpath, str(hpath)))
    for tool in launchmod.SHIMMED:
        mounts.append((f"/usr/local/bin/{tool}", str(config.shim_dir / tool)))
    command = [expand(str(a), raw_env) for a in spec.get("command") or []]
    args = [expand(str(a), raw_env) for a in spec.get("args") or []]
    names = launchmod.find_host_names([*raw_env.values(), *command, *args, *config_texts])
    run_dir = pod_dir / "run" / runner.name
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = launchmod.LaunchContext(
        pod_ip=ip,
        mounts=mounts,
        keep=[str(config.state_dir)],
        hosts=resolve_hosts(str(md.get("namespace", "")), names),
        run_dir=str(run_dir),
    )
    ctx.save(run_dir / "context.json")
    env = {
        "PATH": f"{config.shim_dir}:{SYSTEM_PATH}",
        "HOME": str(work),
        "HOSTNAME": str((pod.get("spec") or {}).get("hostname") or md.get("name", "")),
    }
    if runner.kind == "demo":  # the app binds POD_IP; a manifest may omit it
        env.update(POD_IP=ip, POD_NAME=str(md.get("name", "")), PYTHONUNBUFFERED="1")
    env.update({k: ctx.rewrite(v) for k, v in raw_env.items()})
    env[launchmod.CONTEXT_ENV] = str(run_dir / "context.json")
    env[MARKER_ENV] = str(config.state_dir)
    cwd = ctx.map_path(working_dir) if working_dir else str(work)
    Path(cwd).mkdir(parents=True, exist_ok=True)
    if runner.kind == "demo":
        argv = [config.python, str(config.demo_app)]
    else:
        argv = launchmod.redis_container_argv(command, args, ctx)
    log_path = log_dir / f"{runner.name}.log"
    return Prepared(Launch(argv=argv, env=env, cwd=cwd, log_path=log_path), ctx)
