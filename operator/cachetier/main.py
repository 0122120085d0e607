"""Entry point of the operator process: ``cachetier-operator`` (kopf, all namespaces)."""

from __future__ import annotations

import argparse
import logging

import kopf

import cachetier.handlers  # noqa: F401  (registers the handlers)


def main(argv: list[str] | None = None) -> None:
    """Run the operator until interrupted."""
    parser = argparse.ArgumentParser(prog="cachetier-operator", description=__doc__)
    parser.add_argument("--kubeconfig", default=None, help="default: in-cluster, else KUBECONFIG")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}',
    )
    memo = kopf.Memo(kubeconfig=args.kubeconfig)
    kopf.run(
        standalone=True,
        clusterwide=True,
        liveness_endpoint=args.liveness,
        memo=memo,
    )


if __name__ == "__main__":
    main()
