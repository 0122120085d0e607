"""Command line: ``python -m ctdev.controlplane up|down|status|node ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cluster import ControlPlane
from .common import DEFAULT_STATE_DIR, ControlPlaneError, say


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ctdev.controlplane",
        description="A real, local Kubernetes control plane for development and tests.",
    )
    parser.add_argument("command", choices=["up", "down", "status", "node"])
    parser.add_argument("action", nargs="?", choices=["stop", "start"], help="node: what to do")
    parser.add_argument("node", nargs="?", help="node: the node's name (e.g. cachetier-a)")
    parser.add_argument(
        "--dir", default=str(DEFAULT_STATE_DIR), help="state directory (default: <repo>/.local)"
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="up: worker nodes (>1: cachetier-a, -b, ... in zones a, b, ...; default 1)",
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="up: keep the etcd data of a previous run"
    )
    parser.add_argument(
        "--no-node-agent", action="store_true", help="up: do not start the node agents"
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="up: seconds to wait for each step"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ctdev.controlplane``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "node" and not (args.action and args.node):
        parser.error("node needs an action and a name: node stop|start NAME")
    cp = ControlPlane(
        args.dir,
        node_agent=not args.no_node_agent,
        nodes=args.nodes,
        keep_data=args.keep_data,
        timeout=args.timeout,
    )
    try:
        if args.command == "up":
            cp.start()
            print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
            return 0
        if args.command == "down":
            if not cp.running() and not cp._stray_pids():
                say("nothing running")
            cp.stop()
            return 0
        if args.command == "node":
            if args.action == "stop":
                cp.stop_node(args.node)
            else:
                cp.start_node(args.node)
            return 0
        summary = cp.status()
        for name, pid in summary["components"].items():
            print(f"{name:24} {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
        for name, pid in summary["strays"]:
            print(f"{name:24} running (pid {pid}) WITHOUT a pid file; `down` stops it")
        api = cp.api_url if summary["ports"] else "-"
        print(f"{'apiserver':24} {api} ready={summary['apiserver_ready']}")
        print(f"{'ready nodes':24} {', '.join(summary['ready_nodes']) or '-'}")
        print(f"{'kubeconfig':24} {summary['kubeconfig']}")
        return 0 if cp.is_healthy() else 3
    except ControlPlaneError as err:
        say(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
