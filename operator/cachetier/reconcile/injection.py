"""What the operator injects into a consumer workload, and whether it is there.

Pure: no I/O. The operator owns, through server-side apply under
``cachetier-operator``, only its own entries of a consumer: the
``cachetier.io/tier`` annotation, the ``client.cachetier.io/<tier>`` pod label
(which the NetworkPolicy admits), and per injected container the env entries
``REDIS_URL`` (a secretKeyRef, never a literal) and ``REDIS_ENABLED`` — plus,
at pod granularity, ``REDIS_FLAG_FILE`` and the downward-API volume that
projects the pod annotation ``cachetier.io/redis-enabled`` into that file.
Applying a body without them releases them (SSA removes what a manager no
longer applies and nobody else owns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cachetier import names

API_VERSIONS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1"}
FLAG_VOLUME = "cachetier-flags"
FLAG_DIR = "/etc/cachetier/flags"
FLAG_FILE = "redis-enabled"
INJECTED_ENV = (
    names.ENV_REDIS_URL,
    names.ENV_REDIS_PASSWORD,
    names.ENV_REDIS_MODE,
    names.ENV_REDIS_ENABLED,
    names.ENV_REDIS_FLAG_FILE,
)


@dataclass(frozen=True)
class Injection:
    """The desired injection into one workload."""

    tier: str
    containers: tuple[str, ...]
    redis_enabled: bool
    pod_granularity: bool = False
    auth_revision: str = ""
    """The pod template's ``cachetier.io/auth-revision`` ("": none -- no password was
    ever rotated): a new value rolls the workload onto the new password."""


def target_containers(workload: dict[str, Any], wanted: list[str]) -> tuple[str, ...]:
    """Containers of the pod template to inject: ``wanted`` (if any) that exist, else all."""
    present = [c["name"] for c in template_spec(workload).get("containers") or []]
    if wanted:
        return tuple(n for n in present if n in set(wanted))
    return tuple(present)


def template_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment or StatefulSet ({} when absent)."""
    spec: dict[str, Any] = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    return spec


def _env_for(inj: Injection) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {
            "name": names.ENV_REDIS_URL,
            "valueFrom": {
                "secretKeyRef": {"name": names.connection_secret(inj.tier), "key": "url"}
            },
        },
        # Cluster clients (node-redis createCluster, ioredis Cluster) authenticate to
        # each node with per-node options, not from the URL of the first one. Optional:
        # a tier without auth has no password key.
        {
            "name": names.ENV_REDIS_PASSWORD,
            "valueFrom": {
                "secretKeyRef": {
                    "name": names.connection_secret(inj.tier),
                    "key": "password",
                    "optional": True,
                }
            },
        },
        {
            "name": names.ENV_REDIS_MODE,
            "valueFrom": {
                "secretKeyRef": {
                    "name": names.connection_secret(inj.tier),
                    "key": names.CONNECTION_MODE_KEY,
                }
            },
        },
        # At pod granularity the template keeps "true" as the capability gate and
        # the live per-pod decision comes through the flag file.
        {
            "name": names.ENV_REDIS_ENABLED,
            "value": "true" if (inj.redis_enabled or inj.pod_granularity) else "false",
        },
    ]
    if inj.pod_granularity:
        env.append({"name": names.ENV_REDIS_FLAG_FILE, "value": f"{FLAG_DIR}/{FLAG_FILE}"})
    return env


def build_apply(kind: str, namespace: str, name: str, inj: Injection | None) -> dict[str, Any]:
    """The server-side apply body for a workload; ``None`` releases every entry."""
    body: dict[str, Any] = {
        "apiVersion": API_VERSIONS[kind],
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
    }
    if inj is None:
        return body
    body["metadata"]["annotations"] = {names.ANNOTATION_TIER: inj.tier}
    pod_spec: dict[str, Any] = {
        "containers": [{"name": c, "env": _env_for(inj)} for c in inj.containers]
    }
    if inj.pod_granularity:
        for c in pod_spec["containers"]:
            c["volumeMounts"] = [{"name": FLAG_VOLUME, "mountPath": FLAG_DIR, "readOnly": True}]
        pod_spec["volumes"] = [
            {
                "name": FLAG_VOLUME,
                "downwardAPI": {
                    "items": [
                        {
                            "path": FLAG_FILE,
                            "fieldRef": {
                                "fieldPath": (
                                    f"metadata.annotations['{names.ANNOTATION_REDIS_ENABLED}']"
                                )
                            },
                        }
                    ]
                },
            }
        ]
    template_meta: dict[str, Any] = {"labels": {names.client_label(inj.tier): "true"}}
    if inj.auth_revision:
        template_meta["annotations"] = {names.ANNOTATION_AUTH_REVISION: inj.auth_revision}
    body["spec"] = {"template": {"metadata": template_meta, "spec": pod_spec}}
    return body


def is_injected(workload: dict[str, Any], inj: Injection) -> bool:
    """Whether the live workload already carries exactly the desired entries."""
    meta = workload.get("metadata") or {}
    if (meta.get("annotations") or {}).get(names.ANNOTATION_TIER) != inj.tier:
        return False
    template = (workload.get("spec") or {}).get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if labels.get(names.client_label(inj.tier)) != "true":
        return False
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    if inj.auth_revision and annotations.get(names.ANNOTATION_AUTH_REVISION) != inj.auth_revision:
        return False
    want = {e["name"]: e for e in _env_for(inj)}
    by_name = {c["name"]: c for c in template_spec(workload).get("containers") or []}
    for cname in inj.containers:
        container = by_name.get(cname)
        if container is None:
            return False
        have = {e.get("name"): e for e in container.get("env") or []}
        for ename, entry in want.items():
            if _normalise(have.get(ename)) != _normalise(entry):
                return False
        if not inj.pod_granularity and names.ENV_REDIS_FLAG_FILE in have:
            return False
        if inj.pod_granularity:
            mounts = {m.get("name") for m in container.get("volumeMounts") or []}
            if FLAG_VOLUME not in mounts:
                return False
    volumes = {v.get("name") for v in template_spec(workload).get("volumes") or []}
    return (FLAG_VOLUME in volumes) == inj.pod_granularity


def has_any_injection(workload: dict[str, Any], tier: str) -> bool:
    """Whether anything of ours is left on the workload (annotation, env, label)."""
    meta = workload.get("metadata") or {}
    if (meta.get("annotations") or {}).get(names.ANNOTATION_TIER) == tier:
        return True
    template = (workload.get("spec") or {}).get("template") or {}
    return names.client_label(tier) in ((template.get("metadata") or {}).get("labels") or {})


def _normalise(entry: dict[str, Any] | None) -> Any:
    if entry is None:
        return None
    out: dict[str, Any] = {"name": entry.get("name")}
    if "value" in entry and entry["value"] not in (None, ""):
        out["value"] = entry["value"]
    ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
    if ref:
        out["secretKeyRef"] = {"name": ref.get("name"), "key": ref.get("key")}
        if ref.get("optional"):
            out["secretKeyRef"]["optional"] = True
    return out


def _foreign_container_fields(workload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(manager, its ``f:containers`` of the pod template) for every manager but ours."""
    out = []
    for mf in (workload.get("metadata") or {}).get("managedFields") or []:
        manager = mf.get("manager", "")
        if manager == names.FIELD_MANAGER:
            continue
        fields = mf.get("fieldsV1") or {}
        spec_c = (
            fields.get("f:spec", {}).get("f:template", {}).get("f:spec", {}).get("f:containers", {})
        )
        out.append((str(manager), dict(spec_c)))
    return out


def env_owners(workload: dict[str, Any], containers: tuple[str, ...]) -> dict[str, set[str]]:
    """Managers (other than ours) owning our env names, per env name, from managedFields."""
    owners: dict[str, set[str]] = {}
    for manager, spec_c in _foreign_container_fields(workload):
        for ckey, cval in spec_c.items():
            if not any(f'"name":"{c}"' in ckey for c in containers):
                continue
            for ekey in cval.get("f:env") or {}:
                for ename in INJECTED_ENV:
                    if f'"name":"{ename}"' in ekey:
                        owners.setdefault(ename, set()).add(manager)
    return owners


def selector_matches(labels: dict[str, str], selector: dict[str, Any]) -> bool:
    """Kubernetes label-selector semantics over plain dicts (camelCase selector)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def slim_workload(workload: dict[str, Any]) -> dict[str, Any]:
    """What the watch cache keeps of a Deployment/StatefulSet: everything but its
    managedFields, of which only other managers' claims on the env names we inject
    stay (all :func:`env_owners` reads), so a thousand workloads stay small."""
    meta = workload.get("metadata") or {}
    if "managedFields" not in meta:
        return workload
    kept = []
    for manager, spec_c in _foreign_container_fields(workload):
        containers: dict[str, Any] = {}
        for ckey, cval in spec_c.items():
            env: dict[str, Any] = {
                ekey: {}
                for ekey in (cval.get("f:env") or {})
                if any(f'"name":"{ename}"' in ekey for ename in INJECTED_ENV)
            }
            if env:
                containers[ckey] = {"f:env": env}
        if containers:
            kept.append(
                {
                    "manager": manager,
                    "fieldsV1": {
                        "f:spec": {"f:template": {"f:spec": {"f:containers": containers}}}
                    },
                }
            )
    slim_meta = {k: v for k, v in meta.items() if k != "managedFields"}
    if kept:
        slim_meta["managedFields"] = kept
    return {**workload, "metadata": slim_meta}
