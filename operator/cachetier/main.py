"""Entry point of the operator process: ``cachetier-operator`` (kopf; every namespace, or
those of ``--namespace`` / ``WATCH_NAMESPACES``).

Its two ports are checked before kopf starts, so a port that another program holds
is one clear line and exit code 1, not a traceback after the operator began:

- liveness ``--liveness`` / ``CACHETIER_LIVENESS`` (default ``http://0.0.0.0:8080/healthz``);
- metrics ``--metrics-port`` / ``CACHETIER_METRICS_PORT`` (default 9090; 0 turns it off).

With ``--leader-elect`` (``CACHETIER_LEADER_ELECT=true``) several replicas may run: each
waits for the Lease ``cachetier-operator`` in its own namespace before it starts kopf
(see :mod:`cachetier.kube.lease`), answering liveness meanwhile; exactly one reconciles.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# kopf imports the official ``kubernetes`` client at its own import when it is installed,
# only to register a login handler this operator replaces; the operator speaks HTTP
# through cachetier.kube.transport. Keep the package (32 MB of RSS) out of the operator's
# process: ``python -m cachetier.main`` or the ``cachetier-operator`` script, never a
# process that imports this module for its functions (a test).
if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "cachetier-operator":
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

import kopf

import cachetier.handlers  # noqa: F401  (registers the handlers)
from cachetier import logfmt, names
from cachetier.kube.client import Kube, load_api_client
from cachetier.kube.lease import LeaderElector

EXIT_PORT_IN_USE = 1


class PortInUse(Exception):
    """A port the operator must listen on is taken."""


def check_port(host: str, port: int, what: str, flag: str) -> None:
    """Bind ``host:port`` once and release it; raise PortInUse with advice if it is taken."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(
                f"cannot listen for {what} on {host}:{port}: the address is already in use "
                f"by another program; choose another port with {flag}"
            ) from None


def liveness_host_port(url: str) -> tuple[str, int]:
    """(host, port) of a liveness URL such as ``http://0.0.0.0:8080/healthz``."""
    parts = urlsplit(url)
    return parts.hostname or "0.0.0.0", parts.port or 80


def watch_namespaces(flags: list[str] | None, env: str) -> list[str]:
    """The namespaces to watch: ``--namespace`` flags, else ``WATCH_NAMESPACES``
    (comma-separated); [] means every namespace."""
    names_ = flags if flags else env.split(",")
    return sorted({n.strip() for n in names_ if n.strip()})


def main(argv: list[str] | None = None) -> None:
    """Run the operator until interrupted."""
    parser = argparse.ArgumentParser(prog="cachetier-operator", description=__doc__)
    parser.add_argument("--kubeconfig", default=None, help="default: in-cluster, else KUBECONFIG")
    parser.add_argument(
        "--liveness",
        default=os.environ.get("CACHETIER_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="liveness endpoint URL (env CACHETIER_LIVENESS)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("CACHETIER_METRICS_PORT", "9090")),
        help="Prometheus metrics port, 0 = off (env CACHETIER_METRICS_PORT)",
    )
    parser.add_argument(
        "--log-format",
        choices=logfmt.FORMATS,
        default=os.environ.get("CACHETIER_LOG_FORMAT", "json"),
        help="json (one object per line) or text (env CACHETIER_LOG_FORMAT)",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        default=os.environ.get("CACHETIER_LEADER_ELECT", "").lower() in ("1", "true", "yes"),
        help="several replicas, one active: wait for the Lease (env CACHETIER_LEADER_ELECT)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("CACHETIER_OPERATOR_NAMESPACE") or names.OPERATOR_NAMESPACE,
        help="where the Lease lives (env CACHETIER_OPERATOR_NAMESPACE)",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=None,
        metavar="NS",
        help="reconcile the CacheTiers of NS only (repeatable; env WATCH_NAMESPACES, "
        "comma-separated); default: every namespace",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    namespaces = watch_namespaces(args.namespace, os.environ.get("WATCH_NAMESPACES", ""))
    try:
        host, port = liveness_host_port(args.liveness)
        check_port(host, port, "the liveness endpoint", "--liveness or CACHETIER_LIVENESS")
        check_port(
            "0.0.0.0", args.metrics_port, "metrics", "--metrics-port or CACHETIER_METRICS_PORT"
        )
    except PortInUse as exc:
        print(f"cachetier-operator: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_PORT_IN_USE)
    # The startup handler reads the metrics port from the environment, and kopf's
    # kubeconfig login reads only KUBECONFIG: --kubeconfig alone must be enough.
    os.environ["CACHETIER_METRICS_PORT"] = str(args.metrics_port)
    os.environ["WATCH_NAMESPACES"] = ",".join(namespaces)  # the resync lists these only
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    if args.log_format not in logfmt.FORMATS:  # from the environment
        print(
            f"cachetier-operator: error: CACHETIER_LOG_FORMAT must be json or text, "
            f"got {args.log_format!r}",
            file=sys.stderr,
        )
        sys.exit(2)
    logfmt.configure(args.log_format, args.verbose)
    elector = None
    if args.leader_elect:
        elector = _lead(args, host, port)
    memo = kopf.Memo(kubeconfig=args.kubeconfig)
    try:
        kopf.run(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
            memo=memo,
        )
    finally:
        if elector is not None:
            elector.release()


def _lead(args: argparse.Namespace, host: str, port: int) -> LeaderElector:
    """Wait (answering liveness) until this replica holds the Lease; keep renewing it,
    and exit at once if it is lost: a standby may be reconciling by then."""
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    kube = Kube(load_api_client(args.kubeconfig))
    elector = LeaderElector(kube, args.lease_namespace, identity)
    server = _standby_liveness(host, port)
    try:
        elector.acquire()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()

    def lost() -> None:
        logging.getLogger("cachetier.leader").warning(
            "leader election: stopping now so that the new leader alone reconciles"
        )
        logging.shutdown()
        # At once, not kopf's graceful stop (handlers would run on meanwhile).
        os.kill(os.getpid(), signal.SIGKILL)

    elector.keep(lost)
    return elector


def _standby_liveness(host: str, port: int) -> ThreadingHTTPServer | None:
    """``GET /healthz`` = ok while a standby waits (kopf serves it once leading)."""
    if port == 0:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"standby")

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True).start()
    return server


if __name__ == "__main__":
    main()
