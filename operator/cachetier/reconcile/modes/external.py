"""``mode: external``: a Redis the operator does not run, named by the user's URL Secret."""

from __future__ import annotations

import base64
from typing import Any

from cachetier import names
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.modes.base import Outcome, TierContext, Workbench


class ExternalMode:
    """Only the connection Secret, built from the user's URL; Ready once it exists."""

    def reconcile(self, bench: Workbench, ctx: TierContext) -> Outcome:
        secret = bench.external_connection(ctx.ref, ctx.spec)
        bench.apply_children(ctx.body, [secret])
        host, port = _secret_host_port(secret)
        ctx.status["endpoint"] = {"host": host, "port": port}
        ctx.status["connectionSecret"] = names.connection_secret(ctx.ref.name)
        return Outcome(cond.external_verdict(True, "connection Secret built from the URL"))

    def forget(self, namespace: str, name: str) -> None:
        return None


def _secret_host_port(secret: dict[str, Any]) -> tuple[str, int]:
    data = secret.get("data") or {}
    host = base64.b64decode(data.get("host", "")).decode()
    port = base64.b64decode(data.get("port", "")).decode()
    return host, int(port or 0)
