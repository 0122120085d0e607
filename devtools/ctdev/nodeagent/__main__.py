"""Command line: ``python -m ctdev.nodeagent --kubeconfig K --state-dir D [options]``.

Runs until SIGTERM or SIGINT, then stops the pods' processes and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from . import NODE_NAME
from .agent import Agent, AgentConfig
from .config import Role
from .container import Backoff
from .log import Log, setup


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        prog="python -m ctdev.nodeagent",
        description="Local node agent: pods bound to its node become local processes.",
    )
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="admin kubeconfig")
    p.add_argument("--state-dir", required=True, type=Path, help="volumes, logs, claim dirs")
    p.add_argument("--node-name", default=NODE_NAME)
    p.add_argument("--pod-cidr", default="127.10.0.0/16")
    p.add_argument("--service-cidr", default="127.11.0.0/16")
    p.add_argument("--cpu", default="2")
    p.add_argument("--memory", default="24Gi")
    p.add_argument("--max-pods", default="250")
    p.add_argument("--backoff-base", type=float, default=2.0, help="seconds (kubelet: 10)")
    p.add_argument("--backoff-max", type=float, default=60.0, help="seconds (kubelet: 300)")
    p.add_argument("--fast-probe", type=float, default=0.1, help="probe retry until first ok")
    p.add_argument(
        "--role",
        default="all",
        choices=["all", "node"],
        help="all: also the cluster's Service proxy, names and storage; node: a worker",
    )
    p.add_argument("--zone", default="", help="topology.kubernetes.io/zone of the Node")
    p.add_argument(
        "--taint", action="append", default=[], help="KEY[=VALUE]:EFFECT, set at registration"
    )
    p.add_argument("--names-file", type=Path, help="the cluster's names (see AgentConfig)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


def parse_taint(text: str) -> dict[str, str]:
    """``KEY[=VALUE]:EFFECT`` as a Node taint."""
    head, _, effect = text.rpartition(":")
    key, _, value = head.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise SystemExit(f"bad --taint {text!r}: want KEY[=VALUE]:EFFECT")
    return (
        {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent until signalled."""
    args = parse_args(argv)
    setup(args.log_level)
    log = Log("nodeagent")
    if not args.kubeconfig:
        log.error("no kubeconfig: pass --kubeconfig or set KUBECONFIG")
        return 2
    labels = {"topology.kubernetes.io/zone": args.zone} if args.zone else {}
    role: Role = "node" if args.role == "node" else "all"
    config = AgentConfig(
        kubeconfig=args.kubeconfig,
        state_dir=args.state_dir.resolve(),
        node_name=args.node_name,
        pod_cidr=args.pod_cidr,
        service_cidr=args.service_cidr,
        capacity={
            "cpu": args.cpu,
            "memory": args.memory,
            "pods": args.max_pods,
            "ephemeral-storage": "100Gi",
        },
        backoff=Backoff(base=args.backoff_base, max=args.backoff_max),
        fast_probe=args.fast_probe,
        role=role,
        labels=labels,
        taints=tuple(parse_taint(t) for t in args.taint),
        names_file=args.names_file,
        hosts_file=Path(os.environ["CTDEV_HOSTS_FILE"])
        if os.environ.get("CTDEV_HOSTS_FILE")
        else None,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received; stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent = Agent(config)
    agent.run(stop)
    log.info("agent stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
