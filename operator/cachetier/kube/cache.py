"""Watch caches (informers): LIST once, then WATCH, and serve reads from memory.

A reconcile used to GET each child and LIST the namespace's Deployments,
StatefulSets and pods every pass, so a resync of N tiers beside M workloads cost
O(N x M) reads. With these caches a pass reads what the watches already delivered:
``Kube.get`` and ``Kube.list_objects`` consult the informers first (see
:meth:`cachetier.kube.client.Kube.attach`), and the operator's own writes are
written through (the API's answer replaces the cached copy unless the watch has
delivered a newer one), so the next pass does not see its own write as missing.

Each informer has a *scope*: one kind, one namespace (or all) and a label selector
(key -> allowed values, sent to the API server as ``key in (a,b)``, so only what the
operator owns or selects is watched and held). It serves a read only when the scope
covers it:

- a list whose namespace and selector fall inside the scope (equality selectors);
- a GET by name: a hit is served; a miss falls back to the API when the scope has a
  label selector (the object may exist without the label), and reads as absent when
  the scope holds the whole kind in that namespace.

Until its first LIST has arrived an informer serves nothing. A watch that ends
(timeout, 410 Gone, a connection error) is resumed from the last resourceVersion or,
after an error, by a fresh LIST, and a fresh LIST reports the objects it no longer
holds as deleted. Secrets are never cached (the operator may only GET them by name).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cachetier.ports import ApiError

log = logging.getLogger("cachetier.kube.cache")

WATCH_SECONDS = 240
"""Server-side timeout of one watch request (it is resumed at once)."""


class Client(Protocol):
    """What an informer needs of ``cachetier.kube.client.Kube``."""

    def request(
        self, method: str, resource_path: str, *, query: list[tuple[str, str]] | None = None
    ) -> dict[str, Any]: ...

    def watch(
        self,
        resource_path: str,
        query: list[tuple[str, str]],
        *,
        timeout: float,
        on_response: Callable[[Any], None] | None = None,
    ) -> Iterable[dict[str, Any]]: ...

    def collection(self, kind: str, namespace: str | None) -> str: ...


Slim = Callable[[dict[str, Any]], dict[str, Any]]
OnEvent = Callable[[str, dict[str, Any]], None]


def parse_selector(selector: str | None) -> dict[str, str] | None:
    """``a=b,c=d`` -> ``{a: b, c: d}``; None for anything but equality terms."""
    out: dict[str, str] = {}
    for term in (selector or "").split(","):
        term = term.strip()
        if not term:
            continue
        if "!=" in term or "=" not in term or " " in term or "(" in term:
            return None
        key, _, value = term.partition("=")
        out[key.strip()] = value.lstrip("=").strip()
    return out


def labels_match(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Every ``wanted`` key is present with that value."""
    return all(labels.get(k) == v for k, v in wanted.items())


def drop_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without ``metadata.managedFields`` (most of what a watch delivers)."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


@dataclass(frozen=True)
class Scope:
    """What one informer watches: a kind, a namespace (None: all) and a label selector."""

    kind: str
    namespace: str | None = None
    labels: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def query(self) -> str | None:
        """The ``labelSelector`` sent to the API server."""
        terms = []
        for key, values in sorted(self.labels.items()):
            if len(values) == 1:
                terms.append(f"{key}={next(iter(values))}")
            else:
                terms.append(f"{key} in ({','.join(sorted(values))})")
        return ",".join(terms) or None

    def holds(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` belongs in this scope (its namespace and labels)."""
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        return all(labels.get(k) in values for k, values in self.labels.items())

    def covers_namespace(self, namespace: str | None) -> bool:
        return self.namespace is None or self.namespace == namespace

    def covers_list(self, namespace: str | None, wanted: Mapping[str, str]) -> bool:
        """Whether every object such a list returns is inside this scope."""
        if not self.covers_namespace(namespace):
            return False
        return all(wanted.get(k) in values for k, values in self.labels.items())


class Informer:
    """One LIST+WATCH loop in a daemon thread, and the objects it has seen."""

    def __init__(
        self,
        kube: Client,
        scope: Scope,
        *,
        slim: Slim = drop_managed_fields,
        on_event: OnEvent | None = None,
    ) -> None:
        self.kube = kube
        self.scope = scope
        self.slim = slim
        self.on_event = on_event
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = threading.Event()
        self.lists = 0
        """LIST requests sent (1 unless a watch had to be re-listed)."""
        self.events = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"watch-{scope.kind}-{scope.namespace or 'all'}", daemon=True
        )

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Informer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    def _run(self) -> None:
        rv: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._relist()
                rv = self._watch(rv)
                failures = 0
            except ApiError as exc:
                if exc.status == 410:  # resourceVersion too old: list again
                    rv = None
                    continue
                failures += 1
                rv = None
                if not self._stop.is_set():
                    log.warning("watch of %s: %s; listing again", self._label(), exc)
            except Exception as exc:
                failures += 1
                rv = None
                if not self._stop.is_set():
                    log.info("watch of %s ended (%r); listing again", self._label(), exc)
            if failures:
                self._stop.wait(min(10.0, 0.5 * 2 ** min(failures, 5)))

    def _label(self) -> str:
        return f"{self.scope.kind} in {self.scope.namespace or 'every namespace'}"

    def _relist(self) -> str:
        query = [("labelSelector", q)] if (q := self.scope.query()) else []
        body = self.kube.request(
            "GET", self.kube.collection(self.scope.kind, self.scope.namespace), query=query
        )
        self.lists += 1
        fresh: dict[tuple[str, str], dict[str, Any]] = {}
        for item in body.get("items") or []:
            item.setdefault("kind", self.scope.kind)
            fresh[_key(item)] = self.slim(item)
        with self._lock:
            gone = [o for k, o in self.objects.items() if k not in fresh]
            changed = [o for k, o in fresh.items() if _rv(self.objects.get(k)) != _rv(o)]
            self.objects = fresh
        if self.synced.is_set():
            for obj in gone:
                self._notify("DELETED", obj)
        for obj in changed:
            self._notify("ADDED", obj)
        self.synced.set()
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, rv: str) -> str:
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        if rv:
            query.append(("resourceVersion", rv))
        if q := self.scope.query():
            query.append(("labelSelector", q))
        for event in self.kube.watch(
            self.kube.collection(self.scope.kind, self.scope.namespace),
            query,
            timeout=WATCH_SECONDS + 30,
            on_response=self._set_response,
        ):
            if self._stop.is_set():
                break
            etype = str(event.get("type") or "")
            obj = event.get("object") or {}
            if etype == "ERROR":
                code = int(obj.get("code") or 0)
                raise ApiError(code, str(obj.get("reason") or "watch error"), obj)
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
            if etype == "BOOKMARK":
                continue
            obj.setdefault("kind", self.scope.kind)
            self.events += 1
            if etype == "DELETED":
                with self._lock:
                    self.objects.pop(_key(obj), None)
                self._notify(etype, obj)
                continue
            slim = self.slim(obj)
            with self._lock:
                key = _key(slim)
                if _newer(slim, self.objects.get(key)):
                    self.objects[key] = slim
            self._notify(etype, slim)
        return rv

    def _set_response(self, response: Any) -> None:
        self._response = response
        if self._stop.is_set():
            self.stop()

    def _notify(self, etype: str, obj: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(etype, obj)
        except Exception:
            log.exception("handler of a %s event", self.scope.kind)

    # -- reads ------------------------------------------------------------------------

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((namespace or "", name))
        return dict(obj) if obj is not None else None

    def items(
        self, namespace: str | None, wanted: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            objs = list(self.objects.values())
        return [
            dict(o)
            for o in objs
            if (namespace is None or (o.get("metadata") or {}).get("namespace") == namespace)
            and labels_match((o.get("metadata") or {}).get("labels") or {}, wanted or {})
        ]

    def __len__(self) -> int:
        with self._lock:
            return len(self.objects)

    # -- write-through ----------------------------------------------------------------

    def remember(self, obj: dict[str, Any]) -> None:
        """The API's answer to one of our writes (kept unless the watch has a newer one)."""
        if not self.synced.is_set():
            return
        if not self.scope.holds(obj):
            with self._lock:
                self.objects.pop(_key(obj), None)
            return
        slim = self.slim(obj)
        with self._lock:
            key = _key(slim)
            if _newer(slim, self.objects.get(key)):
                self.objects[key] = slim

    def forget(self, namespace: str | None, name: str) -> None:
        with self._lock:
            self.objects.pop((namespace or "", name), None)


class Caches:
    """The informers of one operator process, and which of them serves a read."""

    def __init__(self) -> None:
        self.informers: list[Informer] = []
        self._lock = threading.Lock()

    def add(self, informer: Informer) -> Informer:
        with self._lock:
            self.informers.append(informer)
        return informer

    def has(self, scope: Scope) -> bool:
        with self._lock:
            return any(i.scope == scope for i in self.informers)

    def _of(self, kind: str) -> list[Informer]:
        with self._lock:
            return [i for i in self.informers if i.scope.kind == kind and i.synced.is_set()]

    def for_list(
        self, kind: str, namespace: str | None, selector: str | None
    ) -> list[dict[str, Any]] | None:
        """The cached answer to a list, or None when no synced informer covers it."""
        wanted = parse_selector(selector)
        if wanted is None:
            return None
        for informer in self._of(kind):
            if informer.scope.covers_list(namespace, wanted):
                return informer.items(namespace, wanted)
        return None

    def for_get(self, kind: str, namespace: str | None, name: str) -> tuple[bool, Any]:
        """(True, object or None) when the caches answer for certain, else (False, None)."""
        for informer in self._of(kind):
            if not informer.scope.covers_namespace(namespace):
                continue
            obj = informer.get(namespace, name)
            if obj is not None:
                return True, obj
            if not informer.scope.labels:
                return True, None
        return False, None

    def remember(self, obj: dict[str, Any]) -> None:
        kind = str(obj.get("kind") or "")
        for informer in self._of(kind):
            if informer.scope.covers_namespace((obj.get("metadata") or {}).get("namespace")):
                informer.remember(obj)

    def forget(self, kind: str, namespace: str | None, name: str) -> None:
        for informer in self._of(kind):
            informer.forget(namespace, name)

    def stop(self) -> None:
        with self._lock:
            informers = list(self.informers)
        for informer in informers:
            informer.stop()

    def sizes(self) -> dict[str, int]:
        """Objects held per ``kind/namespace`` (benchmarks print it)."""
        with self._lock:
            informers = list(self.informers)
        out: dict[str, int] = {}
        for i in informers:
            label = f"{i.scope.kind}/{i.scope.namespace or '*'}"
            out[label] = out.get(label, 0) + len(i)
        return out


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _rv(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def _newer(obj: Mapping[str, Any], held: Mapping[str, Any] | None) -> bool:
    """``obj`` is at least as new as ``held`` (resourceVersions compared as numbers,
    which the API server's are; anything else replaces)."""
    if held is None:
        return True
    a, b = _rv(obj), _rv(held)
    if a.isdigit() and b.isdigit():
        return int(a) >= int(b)
    return True


def wait_all(informers: Iterable[Informer], timeout: float) -> bool:
    """Until every informer has its first LIST (or ``timeout`` seconds have passed)."""
    deadline = time.monotonic() + timeout
    return all(i.wait_synced(max(0.0, deadline - time.monotonic())) for i in informers)
