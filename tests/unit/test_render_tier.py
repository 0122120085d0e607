"""render_tier: the objects' invariants (labels, owners, hashes, security, no secrets)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachetier import names
from cachetier.api.models import CacheTierSpec, parse_spec
from cachetier.render import TierRef, TierSecrets, render_tier, spec_hash

REF = TierRef(name="tasks-cache", namespace="ordo", uid="uid-1")
SECRETS = TierSecrets(app_password="app-pw", operator_password="op-pw", app_password_generated=True)
NOAUTH = TierSecrets(app_password=None, operator_password="op-pw", app_password_generated=False)

SPECS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "rdb": {"redis": {"persistence": {"mode": "rdb", "storageClassName": "ssd"}}},
    "none-noauth": {"redis": {"persistence": {"mode": "none"}}, "auth": {"enabled": False}},
    "tls": {"tls": {"enabled": True, "secretName": "tasks-cache-tls"}},
    "cluster": {"mode": "cluster", "cluster": {"shards": 4, "replicasPerShard": 2}},
}


def _render(raw: dict[str, Any], secrets: TierSecrets | None = None) -> list[dict[str, Any]]:
    spec = parse_spec(raw)
    if secrets is None:
        secrets = SECRETS if spec.auth.enabled else NOAUTH
    return render_tier(REF, spec, secrets)


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def _sts(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (sts,) = _by_kind(objects, "StatefulSet")
    return sts


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _sts(objects)["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


@pytest.mark.parametrize("raw", SPECS.values(), ids=SPECS.keys())
def test_order_and_names(raw: dict[str, Any]) -> None:
    objects = _render(raw)
    assert [(obj["kind"], obj["metadata"]["name"]) for obj in objects] == [
        ("Secret", "tasks-cache-auth"),
        ("Secret", "tasks-cache-auth-recovery"),
        ("Secret", "tasks-cache-connection"),
        ("ConfigMap", "tasks-cache-config"),
        ("Service", "tasks-cache"),
        ("Service", "tasks-cache-headless"),
        ("StatefulSet", "tasks-cache"),
        ("PodDisruptionBudget", "tasks-cache"),
        ("NetworkPolicy", "tasks-cache"),
    ]


@pytest.mark.parametrize("raw", SPECS.values(), ids=SPECS.keys())
def test_every_object_is_labelled_owned_and_stamped(raw: dict[str, Any]) -> None:
    for obj in _render(raw):
        meta = obj["metadata"]
        assert meta["namespace"] == "ordo"
        assert names.common_labels("tasks-cache").items() <= meta["labels"].items()
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "cachetier.io/v1alpha1",
                "kind": "CacheTier",
                "name": "tasks-cache",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["annotations"][names.ANNOTATION_SPEC_HASH] == spec_hash(obj)


@pytest.mark.parametrize("raw", SPECS.values(), ids=SPECS.keys())
def test_no_password_outside_secrets(raw: dict[str, Any]) -> None:
    for obj in _render(raw):
        if obj["kind"] != "Secret":
            text = json.dumps(obj)
            assert "app-pw" not in text and "op-pw" not in text, obj["kind"]


@pytest.mark.parametrize("raw", SPECS.values(), ids=SPECS.keys())
def test_output_is_deterministic_and_unshared(raw: dict[str, Any]) -> None:
    first, second = _render(raw), _render(raw)
    assert first == second
    seen: set[int] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict | list):
            assert id(node) not in seen, "a dict or list is shared between two places"
            seen.add(id(node))
            for child in node.values() if isinstance(node, dict) else node:
                walk(child)

    walk(first)


def test_external_mode_renders_nothing() -> None:
    raw = {"mode": "external", "external": {"urlSecretRef": {"name": "s", "key": "url"}}}
    assert _render(raw, NOAUTH) == []


def test_auth_secret_keys() -> None:
    (auth, recovery, _) = _by_kind(_render({}), "Secret")
    keys = ["password", "config-hash-password", "operator-password", "auth.conf"]
    assert list(auth["data"]) == keys
    # The recovery copy holds the same passwords, nothing else.
    assert recovery["data"] == {k: auth["data"][k] for k in keys[:3]}
    byo = TierSecrets(app_password="theirs", operator_password="op", app_password_generated=False)
    (auth, recovery, connection) = _by_kind(_render({}, byo), "Secret")
    # The copy in use of a BYO password (a change of the user's Secret is then seen).
    assert list(auth["data"]) == keys
    assert list(recovery["data"]) == ["operator-password"]  # not in the recovery copy
    assert base64.b64decode(connection["data"]["password"]) == b"theirs"


def test_a_rotation_accepts_both_passwords_and_tells_consumers_one() -> None:
    rotating = TierSecrets(
        "new", "op", True, previous_app_password="old", accept_previous=True, tell_previous=True
    )
    plain = TierSecrets("old", "op", True)
    (auth, _, connection) = _by_kind(_render({}, rotating), "Secret")
    conf = base64.b64decode(auth["data"]["auth.conf"]).decode()
    assert "user default on >new >old " in conf
    assert base64.b64decode(connection["data"]["password"]) == b"old"
    assert base64.b64decode(auth["data"]["previous-password"]) == b"old"
    told = replace(rotating, tell_previous=False)
    (_, _, connection) = _by_kind(_render({}, told), "Secret")
    assert base64.b64decode(connection["data"]["password"]) == b"new"
    # The pods' config hash sees the first password only: a rotation restarts nothing.
    first = replace(rotating, hash_password="old")
    (sts,) = _by_kind(_render({}, first), "StatefulSet")
    (before,) = _by_kind(_render({}, plain), "StatefulSet")
    key = "cachetier.io/config-hash"
    after_hash = sts["spec"]["template"]["metadata"]["annotations"][key]
    assert after_hash == before["spec"]["template"]["metadata"]["annotations"][key]


def test_auth_enabled_without_password_is_refused() -> None:
    with pytest.raises(ValueError, match="app password"):
        _render({}, NOAUTH)


def test_pod_passes_the_restricted_pod_security_standard() -> None:
    for raw in SPECS.values():
        pod = _sts(_render(raw))["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["readOnlyRootFilesystem"] is True
        volume_kinds = {key for volume in pod["volumes"] for key in volume if key != "name"}
        assert volume_kinds <= {"configMap", "secret", "emptyDir", "persistentVolumeClaim"}


def test_config_hash_rolls_pods_on_config_or_password_change() -> None:
    def config_hash(raw: dict[str, Any], secrets: TierSecrets = SECRETS) -> str:
        annotations = _sts(_render(raw, secrets))["spec"]["template"]["metadata"]["annotations"]
        return str(annotations[names.ANNOTATION_CONFIG_HASH])

    base = config_hash({})
    assert config_hash({}) == base
    assert config_hash({"redis": {"maxmemory": "1gb"}}) != base
    other = TierSecrets(app_password="new", operator_password="op-pw", app_password_generated=True)
    assert config_hash({}, other) != base
    # Not a spec-only change: resources do not touch redis.conf.
    assert config_hash({"resources": {"limits": {"memory": "3Gi"}}}) == base


def test_replicas() -> None:
    assert _sts(_render({}))["spec"]["replicas"] == 1
    assert _sts(_render(SPECS["cluster"]))["spec"]["replicas"] == 12


def test_persistence_volume_and_retention() -> None:
    sts = _sts(_render(SPECS["rdb"]))["spec"]
    (claim,) = sts["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["storageClassName"] == "ssd"
    assert claim["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
    assert sts["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    deleting = _sts(_render({"redis": {"persistence": {"retainOnDelete": False}}}))["spec"]
    assert deleting["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Delete",
    }


def test_no_persistence_uses_an_empty_dir() -> None:
    sts = _sts(_render(SPECS["none-noauth"]))["spec"]
    assert "volumeClaimTemplates" not in sts
    assert "persistentVolumeClaimRetentionPolicy" not in sts
    assert {"name": "data", "emptyDir": {}} in sts["template"]["spec"]["volumes"]


def test_resources_are_copied_and_empty_ones_omitted() -> None:
    assert "resources" not in _container(_render({}))
    raw = {"resources": {"requests": {"cpu": "100m"}}}
    assert _container(_render(raw))["resources"] == {"requests": {"cpu": "100m"}}


def test_cluster_mode_announces_the_pod_ip_and_opens_the_bus() -> None:
    objects = _render(SPECS["cluster"])
    container = _container(objects)
    headless = f"{REF.name}-headless"
    assert container["args"] == [
        "--cluster-announce-ip",
        "$(POD_IP)",
        # Clients get the pod's stable DNS name, which follows a replaced pod.
        "--cluster-announce-hostname",
        f"$(POD_NAME).{headless}.{REF.namespace}.svc",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    conf = next(o for o in objects if o["kind"] == "ConfigMap")["data"]["redis.conf"]
    assert "cluster-preferred-endpoint-type hostname\n" in conf
    assert [port["containerPort"] for port in container["ports"]] == [6379, 16379]
    client, headless = _by_kind(objects, "Service")
    assert [port["port"] for port in client["spec"]["ports"]] == [6379]
    assert [port["port"] for port in headless["spec"]["ports"]] == [6379, 16379]
    (policy,) = _by_kind(objects, "NetworkPolicy")
    bus_rule = policy["spec"]["ingress"][1]
    assert bus_rule["ports"] == [{"protocol": "TCP", "port": 16379}]
    assert bus_rule["from"] == [{"podSelector": {"matchLabels": names.selector_labels(REF.name)}}]


def test_network_policy_admits_consumers_operator_and_itself() -> None:
    (policy,) = _by_kind(_render({}), "NetworkPolicy")
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"client.cachetier.io/tasks-cache": "true"}}},
        {
            # the operator's namespace AND its label: a label alone anybody can set
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "cachetier-system"}
            },
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "cachetier-operator"}},
        },
        {"podSelector": {"matchLabels": names.selector_labels(REF.name)}},
    ]
    spec = parse_spec({})
    (elsewhere,) = _by_kind(render_tier(REF, spec, SECRETS, "ops"), "NetworkPolicy")
    operator_peer = elsewhere["spec"]["ingress"][0]["from"][1]
    assert operator_peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ops"
    }


def test_tls_mounts_the_secret_and_probes_over_tls() -> None:
    objects = _render(SPECS["tls"])
    pod = _sts(objects)["spec"]["template"]["spec"]
    assert {
        "name": "tls",
        "secret": {"secretName": "tasks-cache-tls", "defaultMode": 0o400},
    } in pod["volumes"]
    probe = _container(objects)["readinessProbe"]["exec"]["command"][-1]
    assert "--tls --cacert /etc/redis/tls/ca.crt" in probe


def test_secrets_repr_hides_passwords() -> None:
    assert "app-pw" not in repr(SECRETS) and "op-pw" not in repr(SECRETS)


# spec_hash


def test_spec_hash_ignores_key_order_and_its_own_annotation() -> None:
    one: dict[str, Any] = {"kind": "X", "metadata": {"name": "a", "labels": {"b": "1", "a": "2"}}}
    two = {"metadata": {"labels": {"a": "2", "b": "1"}, "name": "a"}, "kind": "X"}
    assert spec_hash(one) == spec_hash(two)
    stamped = copy.deepcopy(one)
    stamped["metadata"]["annotations"] = {names.ANNOTATION_SPEC_HASH: "whatever"}
    assert spec_hash(stamped) == spec_hash(one)
    assert stamped["metadata"]["annotations"] == {names.ANNOTATION_SPEC_HASH: "whatever"}


def test_spec_hash_sees_other_annotations_and_values() -> None:
    one = {"metadata": {"name": "a"}}
    assert spec_hash(one) != spec_hash({"metadata": {"name": "b"}})
    assert spec_hash(one) != spec_hash({"metadata": {"name": "a", "annotations": {"x": "y"}}})
    assert spec_hash({"a": [1, 2]}) != spec_hash({"a": [2, 1]})
    assert spec_hash({"a": 1}) != spec_hash({"a": "1"})


def test_spec_hash_canonical_form_is_pinned() -> None:
    # Changing the canonical form changes every annotation in every cluster
    # (one write per object after an upgrade): do it on purpose only.
    obj = {"metadata": {"name": "é", "labels": {"b": "1", "a": "2"}}, "n": 1}
    canonical = '{"metadata":{"labels":{"a":"2","b":"1"},"name":"é"},"n":1}'
    assert spec_hash(obj) == hashlib.sha256(canonical.encode()).hexdigest()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values))
def test_spec_hash_survives_a_json_round_trip(obj: dict[str, Any]) -> None:
    assert spec_hash(json.loads(json.dumps(obj))) == spec_hash(obj)


def test_defaults_spec_matches_empty_spec() -> None:
    assert render_tier(REF, CacheTierSpec(), SECRETS) == _render({})


def test_resolve_peers_script_rewrites_addresses_by_name(tmp_path: Any) -> None:
    """The init container's script, run by a real /bin/sh over a nodes.conf."""
    import subprocess

    from cachetier.render._statefulset import RESOLVE_PEERS_SCRIPT

    conf = tmp_path / "nodes.conf"
    conf.write_text(
        "a1 10.9.9.1:6379@16379,localhost myself,master - 0 0 1 connected 0-5460\n"
        "b2 10.9.9.2:6379@16379,no-such-name.invalid master - 0 1 2 connected 5461-16383\n"
        "c3 :0@0 master,noaddr - 0 0 0 disconnected\n"
        "vars currentEpoch 6 lastVoteEpoch 0\n"
    )
    script = RESOLVE_PEERS_SCRIPT.replace("/data/nodes.conf", str(conf))
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    lines = conf.read_text().splitlines()
    assert lines[0].split()[1] in (
        "127.0.0.1:6379@16379,localhost",
        "::1:6379@16379,localhost",
    )
    assert lines[1:] == [
        "b2 10.9.9.2:6379@16379,no-such-name.invalid master - 0 1 2 connected 5461-16383",
        "c3 :0@0 master,noaddr - 0 0 0 disconnected",
        "vars currentEpoch 6 lastVoteEpoch 0",
    ]
    pod = _sts(_render(SPECS["cluster"]))["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == ["sh", "-c", RESOLVE_PEERS_SCRIPT]
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert "initContainers" not in _sts(_render({}))["spec"]["template"]["spec"]
