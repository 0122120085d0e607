"""Unit tests for container environment resolution (ctdev.nodeagent.envres, fieldpath)."""

from __future__ import annotations

import base64
from fractions import Fraction
from typing import Any

import pytest

from ctdev.nodeagent.envres import ConfigError, build_env, expand
from ctdev.nodeagent.fieldpath import (
    FieldPathError,
    field_value,
    format_map,
    go_quote,
    parse_quantity,
    resource_value,
)

Obj = dict[str, Any]


class FakeLookup:
    """ConfigMaps and Secrets from dicts."""

    def __init__(self, configmaps: dict[str, Obj], secrets: dict[str, Obj]) -> None:
        self.configmaps = configmaps
        self.secrets = secrets

    def configmap(self, namespace: str, name: str) -> Obj | None:
        return self.configmaps.get(f"{namespace}/{name}")

    def secret(self, namespace: str, name: str) -> Obj | None:
        return self.secrets.get(f"{namespace}/{name}")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


POD: Obj = {
    "metadata": {
        "name": "web-1",
        "namespace": "ordo",
        "uid": "u-1",
        "labels": {"app": "web"},
        "annotations": {"cachetier.io/redis-enabled": "true"},
    },
    "spec": {
        "nodeName": "cachetier-local",
        "serviceAccountName": "default",
        "containers": [{"name": "app", "resources": {"limits": {"memory": "128Mi"}}}],
    },
    "status": {"podIP": "127.10.0.9", "hostIP": "127.0.0.1", "podIPs": [{"ip": "127.10.0.9"}]},
}
LOOKUP = FakeLookup(
    {"ordo/cfg": {"data": {"MODE": "fast", "LEVEL": "3"}, "binaryData": {"BIN": b64("b")}}},
    {"ordo/auth": {"data": {"password": b64("s3cret"), "user": b64("app")}}},
)
ALLOC = {"cpu": "2", "memory": "24Gi"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-two"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("a$b", "a$b"),
        ("$(A", "$(A"),
        ("end$", "end$"),
        ("$$$(A)", "$1"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two"}) == expected


def test_build_env_order_refs_and_expansion() -> None:
    container = {
        "name": "app",
        "envFrom": [
            {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
            {"secretRef": {"name": "auth"}},
        ],
        "env": [
            {
                "name": "PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "auth", "key": "password"}},
            },
            {"name": "URL", "value": "redis://:$(PASSWORD)@tasks.ordo.svc:6379/$(CFG_LEVEL)"},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {
                "name": "FLAG",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.annotations['cachetier.io/redis-enabled']"}
                },
            },
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "OPT",
                "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope", "optional": True}},
            },
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
        ],
    }
    env = build_env(POD, container, LOOKUP, ALLOC)
    assert env["CFG_MODE"] == "fast" and env["CFG_BIN"] == "b" and env["user"] == "app"
    assert env["URL"] == "redis://:s3cret@tasks.ordo.svc:6379/3"
    assert (env["IP"], env["NAME"], env["NS"], env["FLAG"]) == (
        "127.10.0.9",
        "web-1",
        "ordo",
        "true",
    )
    assert env["MEM"] == "128" and env["CPU"] == "2"
    assert "OPT" not in env and env["MODE"] == "fast"


@pytest.mark.parametrize(
    "var",
    [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}},
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "missing"}}},
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}},
        {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}},
        {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}},
    ],
)
def test_unresolvable_references_are_config_errors(var: Obj) -> None:
    with pytest.raises(ConfigError):
        build_env(POD, {"name": "app", "env": [var]}, LOOKUP, ALLOC)


def test_optional_missing_sources_are_skipped() -> None:
    container = {
        "name": "app",
        "envFrom": [{"secretRef": {"name": "missing", "optional": True}}],
        "env": [
            {
                "name": "X",
                "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k", "optional": True}},
            }
        ],
    }
    assert build_env(POD, container, LOOKUP, ALLOC) == {}


def test_quantities() -> None:
    assert parse_quantity("500m") == Fraction(1, 2)
    assert parse_quantity("1Gi") == 2**30
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("2k") == 2000
    with pytest.raises(FieldPathError):
        parse_quantity("12XB")


def test_resource_value_rounds_up_and_falls_back_to_allocatable() -> None:
    assert resource_value(POD, "app", {"resource": "limits.memory", "divisor": "1Gi"}, ALLOC) == "1"
    assert resource_value(POD, "app", {"resource": "requests.memory"}, ALLOC) == str(128 * 2**20)
    assert resource_value(POD, "app", {"resource": "limits.cpu", "divisor": "1m"}, ALLOC) == "2000"


def test_map_files_use_go_quoting() -> None:
    assert go_quote('a"b\\c\nd\x01é') == '"a\\"b\\\\c\\nd\\x01é"'
    assert format_map({"b": "2", "a": 'x"y'}) == 'a="x\\"y"\nb="2"\n'
    assert field_value(POD, "metadata.labels", for_file=True) == 'app="web"\n'
    assert field_value(POD, "status.podIPs") == "127.10.0.9"
