"""An in-memory :class:`cachetier.ports.KubeApi` (unit tests only).

Objects are kept by (kind, namespace, name). Server-side apply is modelled as a
merge of the applied fields over the stored object (maps recursively, lists of
named entries by name, other lists replaced), which is what the reconcile relies
on for its own fields; it does not model field ownership or conflicts. Every
write is recorded in ``writes`` so tests can assert "no write at all".
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cachetier.ports import NotFound

Key = tuple[str, str | None, str]


def _merge(live: Any, applied: Any) -> Any:
    if isinstance(live, dict) and isinstance(applied, dict):
        out = dict(live)
        for k, v in applied.items():
            out[k] = _merge(live.get(k), v) if k in live else copy.deepcopy(v)
        return out
    if (
        isinstance(live, list)
        and isinstance(applied, list)
        and all(isinstance(x, dict) and "name" in x for x in live + applied)
    ):
        by_name = {x["name"]: x for x in live}
        out_list = [_merge(by_name[x["name"]], x) if x["name"] in by_name else x for x in applied]
        names = {x["name"] for x in applied}
        return out_list + [x for x in live if x["name"] not in names]
    return copy.deepcopy(applied)


def _selects(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    pairs = [p.split("=", 1) for p in selector.split(",") if p]
    return all(labels.get(k) == v for k, v in pairs)


class MemoryKube:
    """The verbs the reconcile uses, over a dict."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        """(verb, kind, name) of every write, in order."""
        self._lock = threading.Lock()
        self._scope = threading.local()
        self._applied: dict[Key, set[str]] = {}
        """Secret data keys each apply set: like server-side apply, a key the manager
        applied before and no longer applies is removed."""

    # -- test helpers ------------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as if it had been created (no write recorded)."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("generation", 1)
        meta.setdefault("uid", f"uid-{meta['name']}")
        with self._lock:
            self.objects[(obj["kind"], meta.get("namespace"), meta["name"])] = copy.deepcopy(obj)
        return obj

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(o) for (k, _, _), o in self.objects.items() if k == kind]

    # -- the Kube surface ----------------------------------------------------------

    @contextmanager
    def scoped(self, name: str) -> Iterator[None]:
        previous = getattr(self._scope, "name", "")
        self._scope.name = name
        try:
            yield
        finally:
            self._scope.name = previous

    @property
    def scope(self) -> str:
        return str(getattr(self._scope, "name", ""))

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((kind, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list_objects(
        self, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(o)
                for (k, ns, _), o in sorted(self.objects.items(), key=lambda i: str(i[0]))
                if k == kind
                and (namespace is None or ns == namespace)
                and _selects((o.get("metadata") or {}).get("labels") or {}, label_selector)
            ]

    def apply(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace"), meta["name"])
        with self._lock:
            self.writes.append(("apply", obj["kind"], meta["name"]))
            live = self.objects.get(key)
            if live is None:
                stored = copy.deepcopy(obj)
                stored["metadata"].setdefault("uid", f"uid-{meta['name']}")
                stored["metadata"].setdefault("generation", 1)
            else:
                stored = _merge(live, obj)
                if obj["kind"] == "Secret" and "data" in obj:
                    for dropped in self._applied.get(key, set()) - set(obj["data"]):
                        stored.get("data", {}).pop(dropped, None)
                if live.get("spec") != stored.get("spec"):
                    stored["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1
            self.objects[key] = stored
            if obj["kind"] == "Secret":
                self._applied[key] = set(obj.get("data") or {})
            return copy.deepcopy(stored)

    def merge_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str = "",
        **_: Any,
    ) -> dict[str, Any]:
        key = (kind, namespace, name)
        with self._lock:
            self.writes.append((f"patch{'/' + subresource if subresource else ''}", kind, name))
            live = self.objects.get(key)
            if live is None:
                raise NotFound(404, "NotFound", None)

            def merge(a: Any, b: Any) -> Any:
                if not isinstance(a, dict) or not isinstance(b, dict):
                    return copy.deepcopy(b)
                out = dict(a)
                for k, v in b.items():
                    if v is None:
                        out.pop(k, None)
                    else:
                        out[k] = merge(a.get(k), v)
                return out

            self.objects[key] = merge(live, patch)
            return copy.deepcopy(self.objects[key])

    def json_patch(
        self, kind: str, namespace: str | None, name: str, ops: list[dict[str, Any]], **_: Any
    ) -> dict[str, Any]:
        key = (kind, namespace, name)
        with self._lock:
            self.writes.append(("jsonpatch", kind, name))
            live = self.objects[key]
            for op in ops:
                parts = op["path"].strip("/").split("/")
                parent: Any = live
                for part in parts[:-1]:
                    parent = parent[int(part)] if isinstance(parent, list) else parent[part]
                last = parts[-1]
                if op["op"] == "add":
                    if isinstance(parent, list):
                        parent.append(op["value"]) if last == "-" else parent.insert(
                            int(last), op["value"]
                        )
                    else:
                        parent[last] = op["value"]
                elif op["op"] == "remove":
                    del parent[int(last) if isinstance(parent, list) else last]
            return copy.deepcopy(live)

    def delete(
        self, kind: str, namespace: str | None, name: str, *, propagation: str | None = None
    ) -> None:
        with self._lock:
            self.writes.append((f"delete/{propagation or 'Background'}", kind, name))
            self.objects.pop((kind, namespace, name), None)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        with self._lock:
            self.writes.append(("create", obj["kind"], meta["name"]))
            if obj["kind"] != "Event":
                self.objects[(obj["kind"], meta.get("namespace"), meta["name"])] = copy.deepcopy(
                    obj
                )
        return obj
