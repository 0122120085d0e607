"""``mode: external``: a Redis the operator does not run, named by the user's URL Secret."""

from __future__ import annotations

import base64
from typing import Any

from cachetier import names
from cachetier.api.errors import SpecError
from cachetier.api.models import CacheTierSpec
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.modes.base import Inputs, Judgement
from cachetier.reconcile.observed import DependencyMissing, Key, Observed
from cachetier.render import TierRef, build_external_connection_secret


class ExternalMode:
    """Only the connection Secret, built from the user's URL; Ready once it exists."""

    def child_keys(self, ref: TierRef, spec: CacheTierSpec) -> list[Key]:
        return [("Secret", names.connection_secret(ref.name))]

    def wants_pods(self, obs: Observed, spec: CacheTierSpec) -> bool:
        return False

    def desired(self, inputs: Inputs) -> list[dict[str, Any]]:
        src_ref = inputs.spec.external.url_secret_ref
        if src_ref is None:  # the CRD's CEL rule refuses this; keep mypy and old CRDs honest
            raise SpecError("spec.external.urlSecretRef: required when mode is external")
        src = inputs.obs.secrets.get(src_ref.name)
        raw = ((src or {}).get("data") or {}).get(src_ref.key)
        if raw is None:
            what = "not found" if src is None else f"has no key {src_ref.key!r}"
            raise DependencyMissing(
                f"spec.external.urlSecretRef: Secret {src_ref.name!r} {what}", delay=30
            )
        url = base64.b64decode(raw).decode()
        try:
            return [build_external_connection_secret(inputs.obs.ref, url.strip())]
        except ValueError as exc:  # the URL is the user's: its faults are spec errors
            raise SpecError(f"spec.external.urlSecretRef: {exc}") from exc

    def judge(self, inputs: Inputs, desired: list[dict[str, Any]], written: set[Key]) -> Judgement:
        host, port = _secret_host_port(desired[0])
        return Judgement(
            verdict=cond.external_verdict(True, "connection Secret built from the URL"),
            endpoint={"host": host, "port": port},
            connection_secret=names.connection_secret(inputs.obs.ref.name),
        )


def _secret_host_port(secret: dict[str, Any]) -> tuple[str, int]:
    data = secret.get("data") or {}
    host = base64.b64decode(data.get("host", "")).decode()
    port = base64.b64decode(data.get("port", "")).decode()
    return host, int(port or 0)
