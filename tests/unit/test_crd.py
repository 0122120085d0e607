"""The generated CRD: in sync with the models, structural, described, complete."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from cachetier import names
from cachetier.api.crd import HEADER, build_crd, build_schema, render_crd_yaml
from cachetier.api.models import CacheTierSpec, RolloutSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "cachetier.yaml"


def load_gen_crds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_crds", REPO_ROOT / "hack" / "gen_crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def version() -> dict[str, Any]:
    versions: list[dict[str, Any]] = build_crd()["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = version()["schema"]["openAPIV3Schema"]
    return schema


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node under ``node`` with its path."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_checked_in_crd_equals_the_generated_one() -> None:
    # A model change without `make crds` fails here.
    assert CRD_FILE.read_text() == render_crd_yaml(), "crds/cachetier.yaml is stale: make crds"


def test_rendering_is_deterministic_and_headed() -> None:
    text = render_crd_yaml()

    assert text == render_crd_yaml()
    assert text.startswith(HEADER)
    assert HEADER.count("\n") == 1
    assert "&id" not in text, "YAML anchors make the file hard to read and diff"
    assert yaml.safe_load(text) == build_crd()


def test_names_scope_and_version() -> None:
    crd = build_crd()
    spec = crd["spec"]

    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "cachetiers.cachetier.io"
    assert spec["group"] == names.GROUP == "cachetier.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "CacheTier"
    assert spec["names"]["plural"] == "cachetiers"
    assert spec["names"]["singular"] == "cachetier"
    assert spec["names"]["shortNames"] == ["ct"]
    assert spec["names"]["categories"] == ["cachetier"]
    assert version()["name"] == "v1alpha1"
    assert version()["served"] is True
    assert version()["storage"] is True
    assert version()["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {column["name"].upper(): column for column in version()["additionalPrinterColumns"]}
    default = [
        name for name, column in columns.items() if column.get("priority", 0) == 0
    ]  # what `kubectl get` shows without -o wide

    assert default == ["MODE", "PHASE", "READY", "ROLLOUT", "CONSUMERS", "PLACEMENT", "AGE"]
    assert columns["MODE"]["jsonPath"] == ".spec.mode"
    assert columns["PHASE"]["jsonPath"] == ".status.phase"
    assert columns["READY"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["ROLLOUT"]["jsonPath"] == ".status.rollout.effectivePercent"
    assert columns["ROLLOUT"]["type"] == "integer"
    assert columns["CONSUMERS"]["jsonPath"] == ".status.consumers.summary"
    assert columns["AGE"]["type"] == "date"
    assert columns["AGE"]["jsonPath"] == ".metadata.creationTimestamp"


def test_schema_is_structural() -> None:
    forbidden = {"$ref", "$defs", "oneOf", "allOf", "not", "title", "const"}
    for path, node in walk(root_schema(), "root"):
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        assert (
            "type" in node or int_or_string or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{path}: no type"
        assert not forbidden & node.keys(), f"{path}: {sorted(forbidden & node.keys())}"
        if "anyOf" in node:
            assert int_or_string, f"{path}: anyOf is only allowed for int-or-string"
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
        assert node.get("additionalProperties", {}) is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if isinstance(node.get("exclusiveMinimum"), bool):
            assert "minimum" in node, path
        else:
            assert "exclusiveMinimum" not in node, f"{path}: JSON Schema style exclusiveMinimum"


def test_every_property_has_a_description() -> None:
    for path, node in walk(root_schema(), "root"):
        for name, child in node.get("properties", {}).items():
            if path == "root" and name == "metadata":
                continue  # the API server forbids anything but type on metadata
            assert child.get("description", "").strip(), f"{path}.{name} has no description"


def test_optional_fields_are_nullable_not_unions() -> None:
    spec = root_schema()["properties"]["spec"]["properties"]
    consumers = spec["consumers"]
    storage_class = spec["redis"]["properties"]["persistence"]["properties"]["storageClassName"]

    assert consumers["nullable"] is True
    assert consumers["type"] == "object"
    assert consumers["required"] == ["selector"]
    assert storage_class == storage_class | {"type": "string", "nullable": True}
    assert "default" not in storage_class, "null defaults are not emitted"


def test_constraints_are_carried() -> None:
    spec = root_schema()["properties"]["spec"]["properties"]
    rollout = spec["rollout"]["properties"]
    redis = spec["redis"]["properties"]
    persistence = redis["persistence"]["properties"]
    limits = spec["resources"]["properties"]["limits"]
    auto = rollout["autoRollback"]["properties"]

    assert (rollout["percent"]["minimum"], rollout["percent"]["maximum"]) == (0, 100)
    assert rollout["steps"]["items"] == {"type": "integer", "minimum": 0, "maximum": 100}
    assert rollout["steps"]["x-kubernetes-list-type"] == "set"
    assert rollout["steps"]["maxItems"] == 20
    assert rollout["granularity"]["enum"] == ["workload", "pod"]
    assert "pattern" in rollout["stepInterval"]
    assert auto["maxLatencyMs"]["exclusiveMinimum"] is True
    assert auto["maxLatencyMs"]["minimum"] == 0
    assert spec["mode"]["enum"] == ["standalone", "replication", "cluster", "external"]
    assert len(redis["maxmemoryPolicy"]["enum"]) == 8
    assert redis["maxmemory"]["pattern"].startswith("^")
    assert redis["disabledCommands"]["items"]["type"] == "string"
    assert "pattern" in redis["disabledCommands"]["items"]
    assert persistence["rdbSchedule"]["items"]["type"] == "string"
    assert "pattern" in persistence["rdbSchedule"]["items"]
    assert persistence["size"]["x-kubernetes-int-or-string"] is True
    assert limits["type"] == "object"
    assert limits["additionalProperties"]["x-kubernetes-int-or-string"] is True
    assert spec["consumers"]["properties"]["selector"]["properties"]["matchLabels"][
        "additionalProperties"
    ] == {"type": "string", "maxLength": 63}


def test_spec_defaults_match_the_models() -> None:
    spec = root_schema()["properties"]["spec"]
    rollout = spec["properties"]["rollout"]

    assert CacheTierSpec.model_validate(spec["default"]) == CacheTierSpec()
    assert RolloutSpec.model_validate(rollout["default"]) == RolloutSpec()
    assert rollout["properties"]["percent"]["default"] == 100
    assert rollout["properties"]["steps"]["default"] == []
    assert spec["properties"]["redis"]["properties"]["maxmemoryPolicy"]["default"] == (
        "allkeys-lru"
    )
    assert spec["properties"]["redis"]["properties"]["disabledCommands"]["default"] == [
        "FLUSHDB",
        "FLUSHALL",
        "KEYS",
    ]


def test_every_nested_default_is_valid_for_its_node() -> None:
    # The API server refuses a CRD whose default fails the node's own rules, and
    # it does not apply inner defaults to a default first: each default object
    # must be complete.
    for path, node in walk(root_schema()["properties"]["spec"], "spec"):
        if node.get("type") == "object" and "properties" in node and "default" in node:
            missing = [
                name
                for name, child in node["properties"].items()
                if "default" in child and name not in node["default"]
            ]
            assert not missing, f"{path}: default lacks {missing}"


def test_status_defaults_only_an_unobserved_generation() -> None:
    """A tier nobody has answered yet is InProgress to kstatus (observedGeneration 0)."""
    status = root_schema()["properties"]["status"]
    assert status["default"] == {"observedGeneration": 0}
    for path, node in walk(status, "status"):
        if path != "status":
            assert "default" not in node, f"{path}: the operator writes status itself"


def test_cel_rules() -> None:
    root = root_schema()
    spec = root["properties"]["spec"]
    rules = {
        rule["message"].split(":")[0]: rule["rule"] for rule in spec["x-kubernetes-validations"]
    }

    assert root["x-kubernetes-validations"][0]["rule"] == "size(self.metadata.name) <= 52"
    assert rules["mode is immutable"] == "oldSelf.mode == self.mode"
    assert "external.urlSecretRef is required when mode is external" in rules
    for _, node in walk(root, "root"):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"].strip(), rule


def test_builder_refuses_undescribed_fields() -> None:
    from pydantic import BaseModel

    class Undescribed(BaseModel):
        size: int = 1

    with pytest.raises(ValueError, match="description"):
        build_schema(Undescribed)


def test_builder_refuses_real_unions() -> None:
    from pydantic import BaseModel, Field

    class Union(BaseModel):
        value: int | str = Field(default=1, description="Either.")

    with pytest.raises(ValueError, match="union"):
        build_schema(Union)


def test_gen_crds_check_reports_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gen_crds = load_gen_crds()
    output = tmp_path / "cachetier.yaml"
    output.write_text(render_crd_yaml().replace("Defaults to 100.", "Defaults to 50."))

    assert gen_crds.main(["--check", "--output", str(output)]) == 1
    captured = capsys.readouterr()
    diff = captured.out.splitlines()
    assert any(line.startswith("-") and "Defaults to 50." in line for line in diff)
    assert any(line.startswith("+") and "Defaults to 100." in line for line in diff)
    assert "make crds" in captured.err

    assert gen_crds.main(["--output", str(output)]) == 0
    assert output.read_text() == render_crd_yaml()
    assert gen_crds.main(["--check", "--output", str(output)]) == 0


def test_optional_enums_are_not_nullable() -> None:
    # The API server refuses null for a nullable enum; without nullable it
    # prunes the null instead, so a status with phase None is accepted.
    phase = root_schema()["properties"]["status"]["properties"]["phase"]

    assert "nullable" not in phase
    assert None not in phase["enum"]
    assert "Ready" in phase["enum"]
