"""REST paths of the Kubernetes adapter (the resync lists tiers across namespaces)."""

from __future__ import annotations

import pytest

from cachetier import names
from cachetier.kube.client import path


def test_namespaced_collection_across_all_namespaces() -> None:
    assert path(names.KIND, None) == f"/apis/{names.API_VERSION}/{names.PLURAL}"
    assert path("Secret", None) == "/api/v1/secrets"


def test_namespaced_object_and_collection() -> None:
    assert path("Secret", "ns", "a") == "/api/v1/namespaces/ns/secrets/a"
    assert path(names.KIND, "ns") == f"/apis/{names.API_VERSION}/namespaces/ns/{names.PLURAL}"
    assert path("Namespace", None, "ns") == "/api/v1/namespaces/ns"


def test_namespaced_object_without_namespace_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a namespace"):
        path("Secret", None, "a")
