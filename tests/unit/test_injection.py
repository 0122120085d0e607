"""What the operator injects into consumers (cachetier.reconcile.injection): pure tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachetier import names
from cachetier.reconcile import injection as inj

NS = "ordo"
TIER = "tasks-cache"


def workload(
    containers: tuple[str, ...] = ("app",),
    env: list[dict[str, Any]] | None = None,
    kind: str = "Deployment",
) -> dict[str, Any]:
    """A consumer as the API returns it, before any injection."""
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "api", "namespace": NS, "labels": {"cache.ordo.dev/tasks": "true"}},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {
                    "containers": [
                        {"name": c, "image": "registry.example/app:1", "env": list(env or [])}
                        for c in containers
                    ]
                },
            },
        },
    }


def server_side_apply(live: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A tiny model of what SSA does with the operator's body: merge the listed entries."""
    out = copy.deepcopy(live)
    meta = out["metadata"]
    meta.setdefault("annotations", {}).update(body["metadata"].get("annotations") or {})
    if "spec" not in body:
        return out
    template = out["spec"]["template"]
    b_template = body["spec"]["template"]
    template["metadata"].setdefault("labels", {}).update(b_template["metadata"]["labels"])
    by_name = {c["name"]: c for c in template["spec"]["containers"]}
    for bc in b_template["spec"]["containers"]:
        container = by_name[bc["name"]]
        env = {e["name"]: e for e in container.get("env") or []}
        for entry in bc.get("env") or []:
            env[entry["name"]] = entry
        container["env"] = list(env.values())
        if "volumeMounts" in bc:
            container["volumeMounts"] = [*container.get("volumeMounts", []), *bc["volumeMounts"]]
    if "volumes" in b_template["spec"]:
        template["spec"]["volumes"] = [
            *template["spec"].get("volumes", []),
            *b_template["spec"]["volumes"],
        ]
    return out


def env_of(obj: dict[str, Any], container: str = "app") -> dict[str, dict[str, Any]]:
    for c in obj["spec"]["template"]["spec"]["containers"]:
        if c["name"] == container:
            return {e["name"]: e for e in c.get("env") or []}
    raise KeyError(container)


# -- build_apply -----------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_build_apply_owns_only_the_operator_entries(enabled: bool) -> None:
    desired = inj.Injection(TIER, ("app", "sidecar"), enabled)
    body = inj.build_apply("Deployment", NS, "api", desired)
    assert body["apiVersion"] == "apps/v1"
    assert body["kind"] == "Deployment"
    assert body["metadata"] == {
        "name": "api",
        "namespace": NS,
        "annotations": {names.ANNOTATION_TIER: TIER},
    }
    template = body["spec"]["template"]
    assert template["metadata"] == {"labels": {f"client.cachetier.io/{TIER}": "true"}}
    assert set(template["spec"]) == {"containers"}
    assert [c["name"] for c in template["spec"]["containers"]] == ["app", "sidecar"]
    for container in template["spec"]["containers"]:
        assert set(container) == {"name", "env"}
        assert container["env"] == [
            {
                "name": "REDIS_URL",
                "valueFrom": {"secretKeyRef": {"name": f"{TIER}-connection", "key": "url"}},
            },
            {
                # optional: a tier without auth has no password key
                "name": "REDIS_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": f"{TIER}-connection",
                        "key": "password",
                        "optional": True,
                    }
                },
            },
            {
                "name": "REDIS_MODE",
                "valueFrom": {"secretKeyRef": {"name": f"{TIER}-connection", "key": "mode"}},
            },
            {"name": "REDIS_ENABLED", "value": "true" if enabled else "false"},
        ]
    # Nothing else of the workload is in the body, so SSA never claims it.
    assert set(body["spec"]) == {"template"}


def test_build_apply_never_carries_a_literal_url() -> None:
    body = inj.build_apply("StatefulSet", NS, "worker", inj.Injection(TIER, ("app",), True))
    assert body["apiVersion"] == "apps/v1"
    assert body["kind"] == "StatefulSet"
    url = env_of(body)["REDIS_URL"]
    assert "value" not in url
    assert "redis://" not in str(body)
    assert "value" not in env_of(body)["REDIS_PASSWORD"]
    assert "value" not in env_of(body)["REDIS_MODE"]


def test_build_apply_pod_granularity_keeps_the_gate_and_adds_the_flag_file() -> None:
    body = inj.build_apply("Deployment", NS, "api", inj.Injection(TIER, ("app",), False, True))
    env = env_of(body)
    # The template keeps "true" (capability gate); the pod's annotation decides live.
    assert env["REDIS_ENABLED"]["value"] == "true"
    assert env["REDIS_FLAG_FILE"]["value"] == f"{inj.FLAG_DIR}/{inj.FLAG_FILE}"
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container["volumeMounts"] == [
        {"name": inj.FLAG_VOLUME, "mountPath": inj.FLAG_DIR, "readOnly": True}
    ]
    (volume,) = body["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == inj.FLAG_VOLUME
    (item,) = volume["downwardAPI"]["items"]
    assert item["path"] == inj.FLAG_FILE
    assert item["fieldRef"]["fieldPath"] == "metadata.annotations['cachetier.io/redis-enabled']"


def test_build_apply_none_is_the_empty_release_body() -> None:
    assert inj.build_apply("Deployment", NS, "api", None) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": NS},
    }


# -- is_injected ---------------------------------------------------------------


@pytest.mark.parametrize("pod_granularity", [False, True])
@pytest.mark.parametrize("enabled", [True, False])
def test_is_injected_after_apply(enabled: bool, pod_granularity: bool) -> None:
    desired = inj.Injection(TIER, ("app",), enabled, pod_granularity)
    live = workload(env=[{"name": "APP_MODE", "value": "web"}])
    assert not inj.is_injected(live, desired)
    applied = server_side_apply(live, inj.build_apply("Deployment", NS, "api", desired))
    assert inj.is_injected(applied, desired)
    assert env_of(applied)["APP_MODE"] == {"name": "APP_MODE", "value": "web"}


def test_is_injected_sees_a_flipped_flag() -> None:
    on = inj.Injection(TIER, ("app",), True)
    off = inj.Injection(TIER, ("app",), False)
    live = server_side_apply(workload(), inj.build_apply("Deployment", NS, "api", on))
    assert inj.is_injected(live, on)
    assert not inj.is_injected(live, off)


def test_is_injected_sees_every_missing_piece() -> None:
    desired = inj.Injection(TIER, ("app",), True)
    good = server_side_apply(workload(), inj.build_apply("Deployment", NS, "api", desired))

    no_annotation = copy.deepcopy(good)
    del no_annotation["metadata"]["annotations"][names.ANNOTATION_TIER]
    assert not inj.is_injected(no_annotation, desired)

    other_tier = copy.deepcopy(good)
    other_tier["metadata"]["annotations"][names.ANNOTATION_TIER] = "other"
    assert not inj.is_injected(other_tier, desired)

    no_label = copy.deepcopy(good)
    del no_label["spec"]["template"]["metadata"]["labels"][f"client.cachetier.io/{TIER}"]
    assert not inj.is_injected(no_label, desired)

    for removed in ("REDIS_URL", "REDIS_ENABLED"):
        gone = copy.deepcopy(good)
        container = gone["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [e for e in container["env"] if e["name"] != removed]
        assert not inj.is_injected(gone, desired), removed

    literal = copy.deepcopy(good)
    container = literal["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "REDIS_URL", "value": "redis://x"} if e["name"] == "REDIS_URL" else e
        for e in container["env"]
    ]
    assert not inj.is_injected(literal, desired)

    wrong_secret = copy.deepcopy(good)
    env_of(wrong_secret)["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] = "other-connection"
    assert not inj.is_injected(wrong_secret, desired)

    # A container that the injection names but the workload lost.
    renamed = copy.deepcopy(good)
    renamed["spec"]["template"]["spec"]["containers"][0]["name"] = "main"
    assert not inj.is_injected(renamed, desired)


def test_is_injected_tolerates_the_api_servers_rendering() -> None:
    """The API server adds `optional`, drops empty values: still injected."""
    desired = inj.Injection(TIER, ("app",), True)
    live = server_side_apply(workload(), inj.build_apply("Deployment", NS, "api", desired))
    ref = env_of(live)["REDIS_URL"]["valueFrom"]["secretKeyRef"]
    ref["optional"] = False
    assert inj.is_injected(live, desired)


def test_is_injected_granularity_switch_needs_a_write() -> None:
    pod = inj.Injection(TIER, ("app",), True, True)
    wl = inj.Injection(TIER, ("app",), True, False)
    at_pod = server_side_apply(workload(), inj.build_apply("Deployment", NS, "api", pod))
    assert inj.is_injected(at_pod, pod)
    # The flag file and its volume are left over: workload granularity must drop them.
    assert not inj.is_injected(at_pod, wl)
    at_wl = server_side_apply(workload(), inj.build_apply("Deployment", NS, "api", wl))
    assert not inj.is_injected(at_wl, pod)


@given(
    containers=st.lists(
        st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), min_size=1, max_size=4, unique=True
    ),
    enabled=st.booleans(),
    pod_granularity=st.booleans(),
    data=st.data(),
)
def test_apply_then_is_injected_property(
    containers: list[str], enabled: bool, pod_granularity: bool, data: st.DataObject
) -> None:
    live = workload(tuple(containers))
    wanted = data.draw(st.lists(st.sampled_from(containers), unique=True))
    targets = inj.target_containers(live, wanted)
    desired = inj.Injection(TIER, targets, enabled, pod_granularity)
    applied = server_side_apply(live, inj.build_apply("Deployment", NS, "api", desired))
    assert inj.is_injected(applied, desired)
    if not pod_granularity:
        assert not inj.is_injected(applied, inj.Injection(TIER, targets, not enabled))
    for c in containers:
        injected = "REDIS_ENABLED" in env_of(applied, c)
        assert injected == (c in targets)


# -- target_containers / has_any_injection -------------------------------------


def test_target_containers() -> None:
    live = workload(("app", "sidecar", "proxy"))
    assert inj.target_containers(live, []) == ("app", "sidecar", "proxy")
    assert inj.target_containers(live, ["proxy", "app"]) == ("app", "proxy")
    assert inj.target_containers(live, ["missing"]) == ()
    assert inj.target_containers({"spec": {}}, []) == ()


def test_has_any_injection() -> None:
    live = workload()
    assert not inj.has_any_injection(live, TIER)
    desired = inj.Injection(TIER, ("app",), False)
    applied = server_side_apply(live, inj.build_apply("Deployment", NS, "api", desired))
    assert inj.has_any_injection(applied, TIER)
    assert not inj.has_any_injection(applied, "other-tier")
    only_label = copy.deepcopy(applied)
    del only_label["metadata"]["annotations"][names.ANNOTATION_TIER]
    assert inj.has_any_injection(only_label, TIER)


# -- env_owners (conflicts via managedFields) ----------------------------------


def managed(
    manager: str, container: str, *env_names: str, operation: str = "Apply"
) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:spec": {
                "f:template": {
                    "f:spec": {
                        "f:containers": {
                            f'k:{{"name":"{container}"}}': {
                                ".": {},
                                "f:env": {
                                    f'k:{{"name":"{e}"}}': {".": {}, "f:name": {}, "f:value": {}}
                                    for e in env_names
                                },
                            }
                        }
                    }
                }
            }
        },
    }


def test_env_owners_names_other_managers_of_our_env() -> None:
    live = workload(("app", "app2"))
    live["metadata"]["managedFields"] = [
        managed(names.FIELD_MANAGER, "app", "REDIS_URL", "REDIS_ENABLED"),
        managed(
            "kubectl-client-side-apply", "app", "APP_MODE", "REDIS_ENABLED", operation="Update"
        ),
        managed("argocd-controller", "app", "REDIS_URL"),
        managed("helm", "app2", "REDIS_ENABLED"),
    ]
    assert inj.env_owners(live, ("app",)) == {
        "REDIS_ENABLED": {"kubectl-client-side-apply"},
        "REDIS_URL": {"argocd-controller"},
    }
    # "app" must not match "app2"'s key, and vice versa.
    assert inj.env_owners(live, ("app2",)) == {"REDIS_ENABLED": {"helm"}}
    assert inj.env_owners(live, ()) == {}


def test_env_owners_ignores_our_own_and_unrelated_fields() -> None:
    live = workload()
    live["metadata"]["managedFields"] = [
        managed(names.FIELD_MANAGER, "app", "REDIS_URL", "REDIS_ENABLED"),
        managed("kubectl-client-side-apply", "app", "APP_MODE", "REDIS_HOST"),
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"},
    ]
    assert inj.env_owners(live, ("app",)) == {}


# -- selector_matches ----------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchLabels": {"a": "1"}}, {}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {"a": "1"},
            False,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
        (
            {
                "matchLabels": {"cache.ordo.dev/tasks": "true"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["batch"]}],
            },
            {"cache.ordo.dev/tasks": "true", "tier": "batch"},
            False,
        ),
    ],
)
def test_selector_matches(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert inj.selector_matches(labels, selector) is expected
