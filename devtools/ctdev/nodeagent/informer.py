"""List-and-watch caches (informers) over the agent's Kubernetes client.

Each ``Informer`` runs one daemon thread: it lists a collection, then watches it from the
list's resourceVersion, keeps every object in a store, and calls a handler for each change
(``ADDED``, ``MODIFIED``, ``DELETED``). A 410 Gone or a broken stream leads to a relist,
which reports objects that vanished meanwhile as ``DELETED``. Handlers run on the informer's
thread and must only dispatch work (never block).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .kube import ApiError, Gone, Kube
from .log import Log
from .objects import Obj, name_of, namespace_of

Handler = Callable[[str, Obj], None]
"""Called with the event type and the object."""

WATCH_SECONDS = 240


class Informer:
    """A watched collection with a store keyed by (namespace, name)."""

    def __init__(
        self,
        kube: Kube,
        path: str,
        *,
        name: str,
        query: dict[str, Any] | None = None,
        handler: Handler | None = None,
    ) -> None:
        self._kube = kube
        self._path = path
        self._query = dict(query or {})
        self._handlers: list[Handler] = [handler] if handler else []
        self._store: dict[tuple[str, str], Obj] = {}
        self._lock = threading.Lock()
        self._rv: str | None = None
        self.synced = threading.Event()
        """Set once the first list has been stored and handled."""
        self._stop = threading.Event()
        self._log = Log(f"nodeagent.informer.{name}")
        self._thread = threading.Thread(target=self._run, name=f"informer-{name}", daemon=True)

    def add_handler(self, handler: Handler) -> None:
        """Add a handler (before ``start``)."""
        self._handlers.append(handler)

    def start(self) -> None:
        """Start the list/watch thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop (it ends at the next event or watch timeout)."""
        self._stop.set()

    def get(self, namespace: str, name: str) -> Obj | None:
        """The stored object, or None."""
        with self._lock:
            return self._store.get((namespace, name))

    def items(self, namespace: str | None = None) -> list[Obj]:
        """All stored objects (of one namespace when given)."""
        with self._lock:
            if namespace is None:
                return list(self._store.values())
            return [o for (ns, _), o in self._store.items() if ns == namespace]

    def _emit(self, kind: str, obj: Obj) -> None:
        for handler in self._handlers:
            try:
                handler(kind, obj)
            except Exception:
                self._log.exception("handler failed", event=kind, object=name_of(obj))

    def _relist(self) -> None:
        items: list[Obj] = []
        cont: str | None = None
        while True:
            page = self._kube.request(
                "GET", self._path, query={**self._query, "limit": 500, "continue": cont}
            )
            items.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue") or None
            if not cont:
                self._rv = str((page.get("metadata") or {}).get("resourceVersion", ""))
                break
        fresh = {(namespace_of(o), name_of(o)): o for o in items}
        with self._lock:
            gone = [o for k, o in self._store.items() if k not in fresh]
            self._store = fresh
        for obj in gone:
            self._emit("DELETED", obj)
        for obj in items:
            self._emit("ADDED", obj)
        self.synced.set()

    def _watch(self) -> None:
        query = {
            **self._query,
            "resourceVersion": self._rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": WATCH_SECONDS,
        }
        for event in self._kube.watch(self._path, query, timeout=WATCH_SECONDS + 30):
            if self._stop.is_set():
                return
            kind = str(event.get("type", ""))
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(410, "Expired", str(obj.get("message", "")))
                raise ApiError(int(obj.get("code") or 500), "WatchError", str(obj))
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self._rv = str(rv)
            if kind == "BOOKMARK":
                continue
            key = (namespace_of(obj), name_of(obj))
            with self._lock:
                if kind == "DELETED":
                    self._store.pop(key, None)
                else:
                    self._store[key] = obj
            self._emit(kind, obj)

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                if self._rv is None:
                    self._relist()
                self._watch()
                delay = 0.5
            except Gone:
                self._rv = None
            except Exception as err:
                self._log.warning("list/watch failed; retrying", error=str(err), delay=delay)
                self._rv = None
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
