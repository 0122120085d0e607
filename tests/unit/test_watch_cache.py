"""The watch caches' rules: which reads they answer, and write-through ordering.

The LIST+WATCH loop itself runs against the real API server in every e2e test (the
operator serves its reads from it); here a scripted client drives one informer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from cachetier.kube.cache import Caches, Informer, Scope, parse_selector


def obj(name: str, rv: int, labels: dict[str, str] | None = None, ns: str = "ns") -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": str(rv),
            "labels": labels or {},
            "managedFields": [{"manager": "x"}],
        },
    }


class Scripted:
    """A LIST that returns ``items``, then one watch that yields ``events`` and ends."""

    def __init__(self, items: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        self.items, self.events = items, events
        self.done = threading.Event()
        self.queries: list[list[tuple[str, str]]] = []

    def collection(self, kind: str, namespace: str | None) -> str:
        return f"/api/v1/namespaces/{namespace}/pods"

    def request(
        self, method: str, resource_path: str, *, query: list[tuple[str, str]] | None = None
    ) -> dict[str, Any]:
        self.queries.append(query or [])
        return {"metadata": {"resourceVersion": "10"}, "items": [dict(i) for i in self.items]}

    def watch(
        self,
        resource_path: str,
        query: list[tuple[str, str]],
        *,
        timeout: float,
        on_response: Callable[[Any], None] | None = None,
    ) -> Iterable[dict[str, Any]]:
        self.queries.append(query)
        yield from self.events
        self.events = []
        self.done.set()
        threading.Event().wait(0.05)


LABELS = {"app.kubernetes.io/name": frozenset({"cachetier", "cachetier-sentinel"})}


def test_selectors_parse_equality_terms_only() -> None:
    assert parse_selector("a=b,c=d") == {"a": "b", "c": "d"}
    assert parse_selector("a==b") == {"a": "b"}
    assert parse_selector(None) == {}
    assert parse_selector("a!=b") is None
    assert parse_selector("a in (b)") is None


def test_a_scope_covers_only_lists_inside_it() -> None:
    scope = Scope("Pod", None, LABELS)
    assert scope.query() == "app.kubernetes.io/name in (cachetier,cachetier-sentinel)"
    assert scope.covers_list("ns", {"app.kubernetes.io/name": "cachetier", "x": "y"})
    assert not scope.covers_list("ns", {})  # every pod of the namespace: not held
    assert not scope.covers_list("ns", {"app.kubernetes.io/name": "other"})
    assert not Scope("Pod", "a").covers_list("b", {})


def test_list_watch_write_through_and_deletes() -> None:
    ours = {"app.kubernetes.io/name": "cachetier", "app.kubernetes.io/instance": "t"}
    client = Scripted(
        [obj("p0", 5, ours), obj("p1", 6, ours)],
        [
            {"type": "MODIFIED", "object": obj("p0", 11, ours)},
            {"type": "DELETED", "object": obj("p1", 12, ours)},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
        ],
    )
    seen: list[tuple[str, str]] = []
    informer = Informer(
        client,
        Scope("Pod", "ns", LABELS),
        on_event=lambda t, o: seen.append((t, o["metadata"]["name"])),
    )
    caches = Caches()
    caches.add(informer)
    assert caches.for_list("Pod", "ns", "app.kubernetes.io/name=cachetier") is None  # not synced
    informer.start()
    assert client.done.wait(5)
    informer.stop()
    listed = caches.for_list("Pod", "ns", "app.kubernetes.io/name=cachetier")
    assert listed is not None
    assert [p["metadata"]["name"] for p in listed] == ["p0"]
    assert listed[0]["metadata"]["resourceVersion"] == "11"
    assert "managedFields" not in listed[0]["metadata"]
    assert ("DELETED", "p1") in seen and ("MODIFIED", "p0") in seen
    # The watch resumed from the LIST's resourceVersion, with the label selector.
    assert ("resourceVersion", "10") in client.queries[1]
    # A labelled scope: a miss is not certain (the object may exist unlabelled) ...
    assert caches.for_get("Pod", "ns", "p1") == (False, None)
    # ... a hit is; an older answer to a write never replaces a newer watched one.
    caches.remember(obj("p0", 9, ours))
    assert caches.for_get("Pod", "ns", "p0")[1]["metadata"]["resourceVersion"] == "11"
    caches.remember(obj("p0", 20, ours))
    assert caches.for_get("Pod", "ns", "p0")[1]["metadata"]["resourceVersion"] == "20"
    # A write that takes the labels off: out of the scope, out of the cache.
    caches.remember(obj("p0", 21, {}))
    assert caches.for_get("Pod", "ns", "p0") == (False, None)


def test_a_whole_kind_scope_answers_misses_too() -> None:
    client = Scripted([obj("d0", 3)], [])
    informer = Informer(client, Scope("Pod", "ns"))
    caches = Caches()
    caches.add(informer)
    informer.start()
    assert informer.wait_synced(5)
    informer.stop()
    assert caches.for_get("Pod", "ns", "missing") == (True, None)
    assert caches.for_get("Pod", "other", "d0") == (False, None)  # another namespace
    assert len(caches.for_list("Pod", "ns", None) or []) == 1


def test_a_slim_workload_keeps_what_the_conflict_check_reads() -> None:
    from cachetier import names
    from cachetier.reconcile.injection import env_owners, slim_workload

    env = {f'k:{{"name":"{names.ENV_REDIS_URL}"}}': {}, 'k:{"name":"OTHER"}': {}}
    workload = {
        "kind": "Deployment",
        "metadata": {
            "name": "w",
            "managedFields": [
                {
                    "manager": "kubectl",
                    "fieldsV1": {
                        "f:spec": {
                            "f:replicas": {},
                            "f:template": {
                                "f:spec": {"f:containers": {'k:{"name":"app"}': {"f:env": env}}}
                            },
                        }
                    },
                },
                {"manager": "other", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": names.FIELD_MANAGER, "fieldsV1": {"f:spec": {}}},
            ],
        },
    }
    slim = slim_workload(workload)
    assert (
        env_owners(slim, ("app",))
        == env_owners(workload, ("app",))
        == {names.ENV_REDIS_URL: {"kubectl"}}
    )
    assert [m["manager"] for m in slim["metadata"]["managedFields"]] == ["kubectl"]
