"""The Kubernetes API adapter: the only module that talks to the API server.

Objects go in and out as plain dicts (the JSON the API speaks), so the pure
layers never see a client type. Writes are counted (``writes``) so tests and
benchmarks can prove that a reconcile with nothing to do writes nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cachetier import metrics, names
from cachetier.kube import transport
from cachetier.kube.cache import Caches
from cachetier.kube.transport import ApiClient
from cachetier.ports import ApiError, Conflict, NotFound

__all__ = ["ApiClient", "ApiError", "Conflict", "Kube", "NotFound", "load_api_client"]

log = logging.getLogger("cachetier.kube")


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    prefix: str
    plural: str
    namespaced: bool = True


RESOURCES: dict[str, Resource] = {
    "Secret": Resource("/api/v1", "secrets"),
    "ConfigMap": Resource("/api/v1", "configmaps"),
    "Service": Resource("/api/v1", "services"),
    "Pod": Resource("/api/v1", "pods"),
    "Event": Resource("/api/v1", "events"),
    "PersistentVolumeClaim": Resource("/api/v1", "persistentvolumeclaims"),
    "Namespace": Resource("/api/v1", "namespaces", namespaced=False),
    "Node": Resource("/api/v1", "nodes", namespaced=False),
    "StorageClass": Resource("/apis/storage.k8s.io/v1", "storageclasses", namespaced=False),
    "StatefulSet": Resource("/apis/apps/v1", "statefulsets"),
    "Deployment": Resource("/apis/apps/v1", "deployments"),
    "PodDisruptionBudget": Resource("/apis/policy/v1", "poddisruptionbudgets"),
    "NetworkPolicy": Resource("/apis/networking.k8s.io/v1", "networkpolicies"),
    "Lease": Resource("/apis/coordination.k8s.io/v1", "leases"),
    names.KIND: Resource(f"/apis/{names.API_VERSION}", names.PLURAL),
}


def load_api_client(kubeconfig: str | None = None) -> ApiClient:
    """A client from in-cluster credentials, else the kubeconfig (``kubeconfig``, else
    the first path of ``KUBECONFIG``, read now)."""
    return ApiClient(transport.load(kubeconfig), maxsize=64)


def path(kind: str, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    """REST path of a collection or an object.

    A namespaced kind with ``namespace`` None is the collection across every
    namespace (``/apis/G/V/plural``), which only a list may ask for.
    """
    res = RESOURCES[kind]
    parts = [res.prefix]
    if res.namespaced:
        if namespace is None:
            if name is not None or sub:
                raise ValueError(f"{kind} is namespaced: {name!r} needs a namespace")
        else:
            parts += ["namespaces", quote(namespace, safe="")]
    parts.append(res.plural)
    if name is not None:
        parts.append(quote(name, safe=""))
    if sub:
        parts.append(sub)
    return "/".join(parts)


def _plural_of(resource_path: str) -> str:
    """``/api/v1/namespaces/x/pods/p/status`` -> ``pods/status``; collections -> ``pods``."""
    parts = [p for p in resource_path.split("/") if p]
    plurals = {r.plural for r in RESOURCES.values()}
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in plurals and not (i > 0 and parts[i - 1] == "namespaces"):
            rest = parts[i + 2 :]
            return parts[i] + (f"/{rest[0]}" if rest else "")
    return resource_path


class Kube:
    """A small, thread-safe JSON client over one ApiClient."""

    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client
        self._lock = threading.Lock()
        self.writes: Counter[str] = Counter()
        self.writes_by_scope: Counter[str] = Counter()
        self.writes_by_kind: Counter[str] = Counter()
        """Writes per ``METHOD plural`` (``PATCH statefulsets``): what a benchmark shows."""
        self.reads: Counter[str] = Counter()
        """GET requests sent per plural (a cache hit sends none)."""
        self._scope = threading.local()
        self.caches: Caches | None = None
        self._own_versions: dict[tuple[Any, Any], list[str]] = {}

    def wrote(self, kind: str, namespace: str, name: str, resource_version: str) -> bool:
        """Whether ``resource_version`` of this object is one our recent writes made
        (a watch event of a CacheTier that only shows our own finalizer or status)."""
        if kind != names.KIND:
            return False
        with self._lock:
            return resource_version in self._own_versions.get((namespace, name), ())

    def attach(self, caches: Caches) -> None:
        """Serve reads from these watch caches where they cover them, and write the
        answers to our writes through to them (``cachetier.kube.cache``)."""
        self.caches = caches

    # -- transport ---------------------------------------------------------

    def request(
        self,
        method: str,
        resource_path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One HTTP call; JSON in, JSON out; raises ApiError on non-2xx."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if method != "GET":
            log.debug("write %s %s", method, resource_path)
            metrics.API_WRITES.inc()
            metrics.API_WRITES_BY.labels(method, _plural_of(resource_path)).inc()
            with self._lock:
                self.writes[method] += 1
                self.writes_by_scope[getattr(self._scope, "name", "")] += 1
                self.writes_by_kind[f"{method} {_plural_of(resource_path)}"] += 1
        else:
            metrics.API_READS.inc()
            with self._lock:
                self.reads[_plural_of(resource_path)] += 1
        response = self.api_client.request(
            method, resource_path, query=query, body=body, headers=headers, timeout=30
        )
        data = response.data
        parsed: dict[str, Any] = {}
        if data:
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = {"message": data.decode("utf-8", "replace")}
        if not 200 <= response.status < 300:
            exc: type[ApiError] = ApiError
            if response.status == 404:
                exc = NotFound
            elif response.status == 409:
                exc = Conflict
            raise exc(response.status, str(response.reason), parsed)
        return parsed

    def collection(self, kind: str, namespace: str | None) -> str:
        """REST path of ``kind`` in ``namespace`` (None: every namespace)."""
        return path(kind, namespace)

    def watch(
        self,
        resource_path: str,
        query: list[tuple[str, str]],
        *,
        timeout: float,
        on_response: Callable[[Any], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The events of one watch request, parsed, until the server ends it."""
        with self._lock:
            self.reads[f"watch {_plural_of(resource_path)}"] += 1
        response = self.api_client.request(
            "GET",
            resource_path,
            query=query,
            headers={"Accept": "application/json"},
            timeout=(10, timeout),
            stream=True,
        )
        if on_response is not None:
            on_response(response)
        if not 200 <= response.status < 300:
            data = response.read()
            response.release_conn()
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = {"message": data.decode("utf-8", "replace")}
            raise ApiError(response.status, str(response.reason), parsed)
        buffer = b""
        try:
            for chunk in response.stream(65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()

    @contextmanager
    def scoped(self, name: str) -> Iterator[None]:
        """Attribute the writes of this thread to ``name`` (a tier) while inside."""
        previous = getattr(self._scope, "name", "")
        self._scope.name = name
        try:
            yield
        finally:
            self._scope.name = previous

    @property
    def scope(self) -> str:
        """The name this thread's writes are attributed to ("" outside :meth:`scoped`)."""
        return str(getattr(self._scope, "name", ""))

    def writes_for(self, name: str) -> int:
        """Write requests attributed to ``name``."""
        with self._lock:
            return self.writes_by_scope[name]

    @property
    def write_count(self) -> int:
        """Total write requests sent so far."""
        with self._lock:
            return sum(self.writes.values())

    # -- verbs ---------------------------------------------------------------

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (from a watch cache if one holds it)."""
        if self.caches is not None:
            certain, obj = self.caches.for_get(kind, namespace, name)
            if certain:
                return obj  # type: ignore[no-any-return]
        try:
            return self.request("GET", path(kind, namespace, name))
        except NotFound:
            return None

    def list_objects(
        self, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Items of a collection (from a watch cache if one covers it)."""
        if self.caches is not None:
            cached = self.caches.for_list(kind, namespace, label_selector)
            if cached is not None:
                return cached
        query = [("labelSelector", label_selector)] if label_selector else []
        items = self.request("GET", path(kind, namespace), query=query).get("items", [])
        return list(items)

    def apply(
        self,
        obj: dict[str, Any],
        *,
        field_manager: str = names.FIELD_MANAGER,
        force: bool = True,
        subresource: str = "",
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` under ``field_manager``."""
        meta = obj["metadata"]
        query = [("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        return self._remember(
            self.request(
                "PATCH",
                path(obj["kind"], meta.get("namespace"), meta["name"], subresource),
                query=query,
                body=obj,
                content_type="application/apply-patch+yaml",
            ),
            obj["kind"],
        )

    def _remember(self, answer: dict[str, Any], kind: str) -> dict[str, Any]:
        """Write the API's answer to a write through to the watch caches."""
        meta = answer.get("metadata") or {}
        if kind == names.KIND and meta.get("resourceVersion"):
            with self._lock:
                mine = self._own_versions.setdefault((meta.get("namespace"), meta.get("name")), [])
                mine[:] = [*mine[-7:], str(meta["resourceVersion"])]
        if self.caches is not None and answer.get("metadata"):
            self.caches.remember({**answer, "kind": answer.get("kind") or kind})
        return answer

    def merge_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str = "",
        field_manager: str = names.FIELD_MANAGER,
    ) -> dict[str, Any]:
        """A JSON merge patch."""
        return self._remember(
            self.request(
                "PATCH",
                path(kind, namespace, name, subresource),
                query=[("fieldManager", field_manager)],
                body=patch,
                content_type="application/merge-patch+json",
            ),
            kind,
        )

    def json_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        ops: list[dict[str, Any]],
        *,
        field_manager: str = names.FIELD_MANAGER,
    ) -> dict[str, Any]:
        """An RFC 6902 JSON patch (used with a `test` op for optimistic updates)."""
        return self._remember(
            self.request(
                "PATCH",
                path(kind, namespace, name),
                query=[("fieldManager", field_manager)],
                body=ops,
                content_type="application/json-patch+json",
            ),
            kind,
        )

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST a new object."""
        meta = obj["metadata"]
        return self._remember(
            self.request("POST", path(obj["kind"], meta.get("namespace")), body=obj), obj["kind"]
        )

    def delete(
        self, kind: str, namespace: str | None, name: str, *, propagation: str | None = None
    ) -> None:
        """Delete, ignoring a missing object (``propagation``: Orphan, Background ...)."""
        body = None
        if propagation is not None:
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        with suppress(NotFound):
            self.request("DELETE", path(kind, namespace, name), body=body)
        if self.caches is not None and kind != "Pod":
            # A pod being deleted stays (terminating) until the watch says it is gone.
            self.caches.forget(kind, namespace, name)
