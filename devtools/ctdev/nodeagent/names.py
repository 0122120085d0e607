"""Service host names in text: find them and rewrite them to addresses (pure).

Recognised forms (the cluster DNS names a pod would resolve):

- ``<service>.<namespace>.svc`` and ``<service>.<namespace>.svc.cluster.local``;
- ``<host>.<service>.<namespace>.svc[.cluster.local]`` (a pod behind a headless Service);
- inside URLs only (``scheme://[user[:pass]@]host[:port]``): the short forms ``<service>``
  and ``<service>.<namespace>``, which are only ever rewritten when a Service by that name
  exists (the caller decides which names resolve).

Rewriting replaces exactly the names present in the mapping and leaves everything else.
"""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
FQDN = re.compile(
    rf"(?<![\w.-])((?:{_LABEL}\.)?{_LABEL}\.{_LABEL}\.svc(?:\.cluster\.local)?)\.?(?![\w-]|\.[\w-])"
)
URL_HOST = re.compile(
    rf"(?P<pre>\b[a-z][a-z0-9+.-]*://(?:[^@/\s\"']*@)?)(?P<host>{_LABEL}(?:\.{_LABEL})?)"
    r"(?=[:/?#\s\"']|$)"
)


class ServiceName:
    """A parsed in-cluster name: ``host`` is set for ``<host>.<service>...`` names.

    (Not a dataclass: the shims import this module and ``dataclasses`` is slow to import.)
    """

    __slots__ = ("host", "namespace", "service")

    def __init__(self, service: str, namespace: str, host: str | None = None) -> None:
        self.service = service
        self.namespace = namespace
        self.host = host

    def _key(self) -> tuple[str, str, str | None]:
        return (self.service, self.namespace, self.host)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServiceName) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"ServiceName{self._key()!r}"


def parse(name: str, default_namespace: str) -> ServiceName | None:
    """Parse a Service name (full or, from a URL, short); None when it is not one."""
    name = name.rstrip(".").removesuffix(".cluster.local")
    labels = name.split(".")
    if labels[-1] == "svc":
        labels = labels[:-1]
        if len(labels) == 2:
            return ServiceName(labels[0], labels[1])
        if len(labels) == 3:
            return ServiceName(labels[1], labels[2], labels[0])
        return None
    if len(labels) == 1:
        return ServiceName(labels[0], default_namespace)
    if len(labels) == 2:
        return ServiceName(labels[0], labels[1])
    return None


def find(text: str) -> set[str]:
    """Candidate names in ``text``: full Service names and URL hosts without many dots."""
    found = {m.group(1) for m in FQDN.finditer(text)}
    found.update(m.group("host") for m in URL_HOST.finditer(text))
    return found


def rewrite(text: str, mapping: dict[str, str]) -> str:
    """Replace the names in ``mapping`` (full names anywhere, short names in URLs only)."""
    if not mapping:
        return text

    def full(m: re.Match[str]) -> str:
        return mapping.get(m.group(1), m.group(0))

    def url(m: re.Match[str]) -> str:
        host = m.group("host")
        return m.group("pre") + mapping[host] if host in mapping else m.group(0)

    return URL_HOST.sub(url, FQDN.sub(full, text))
