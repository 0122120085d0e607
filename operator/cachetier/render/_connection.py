"""Connection URLs and the <tier>-connection Secret (servicebinding.io keys).

Pure: no I/O. The Secret carries url/uri (what REDIS_URL receives), host, port,
password, type, provider, plus ``mode`` so clients know when to use a cluster client.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import profile

from ._meta import object_meta, secret_data, stamp
from ._types import TierRef

_SCHEMES = ("redis", "rediss")


def connection_url(ref: TierRef, spec: CacheTierSpec, password: str | None) -> str:
    """The URL of the tier's client Service, e.g. ``redis://:PW@tier.ns.svc:6379/0``.

    rediss:// when TLS is enabled; no credentials part when ``password`` is None
    (auth disabled). The password is percent-encoded, so any character is safe.
    Raises ValueError for mode external: that URL comes from the referenced Secret.
    """
    if profile(spec).takes_url:
        raise ValueError("mode external has no operator-made URL; use the referenced Secret")
    scheme = "rediss" if spec.tls.enabled else "redis"
    credentials = "" if password is None else f":{quote(password, safe='')}@"
    host = names.service_host(ref.name, ref.namespace)
    return f"{scheme}://{credentials}{host}:{names.REDIS_PORT}/0"


def build_connection_secret(
    ref: TierRef,
    *,
    url: str,
    host: str,
    port: int,
    password: str | None,
    mode: str = "standalone",
    username: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The <tier>-connection Secret, stamped with its spec hash.

    ``password`` None (auth disabled) leaves the ``password`` key out rather than
    writing an empty one; ``username`` is written only when there is one.
    """
    values = {"url": url, "uri": url, "host": host, "port": str(port)}
    if username is not None:
        values[names.CONNECTION_USERNAME_KEY] = username
    if password is not None:
        values["password"] = password
    values["type"] = names.CONNECTION_TYPE
    values["provider"] = names.CONNECTION_PROVIDER
    values[names.CONNECTION_MODE_KEY] = mode
    values.update(extra or {})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(ref, names.connection_secret(ref.name), names.COMPONENT_CONNECTION),
        "type": names.CONNECTION_SECRET_TYPE,
        "data": secret_data(values),
    }
    return stamp(secret)


def parse_redis_url(url: str) -> tuple[str, int, str | None, str | None, bool]:
    """Split a redis:// or rediss:// URL into (host, port, username, password, tls).

    Username and password are percent-decoded; the port defaults to 6379.
    Raises ValueError with a message naming what is wrong (never echoing the URL,
    which may hold a password).
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"malformed Redis URL: {exc}") from None
    if parts.scheme not in _SCHEMES:
        shown = parts.scheme or "(none)"
        raise ValueError(f"Redis URL scheme must be redis or rediss, got {shown}")
    if not parts.hostname:
        raise ValueError("Redis URL has no host (expected redis[s]://[user:password@]host:port/db)")
    path = parts.path.lstrip("/")
    if path and not path.isdigit():
        raise ValueError("Redis URL path must be a database number, e.g. /0")
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    if re.search(r"%(?![0-9A-Fa-f]{2})", userinfo):
        raise ValueError(
            "Redis URL credentials have a malformed percent-escape (% must be followed by "
            "two hex digits; write a literal % as %25)"
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return (
        parts.hostname,
        port if port is not None else names.REDIS_PORT,
        username,
        password,
        parts.scheme == "rediss",
    )


def build_external_connection_secret(ref: TierRef, url: str) -> dict[str, Any]:
    """The <tier>-connection Secret for mode external, from the referenced URL.

    The URL is kept as given (url/uri); host, port, username and password are
    parsed out of it. Raises ValueError on a malformed URL.
    """
    host, port, username, password, _tls = parse_redis_url(url)
    return build_connection_secret(
        ref,
        url=url.strip(),
        host=host,
        port=port,
        password=password,
        mode="external",
        username=username,
    )
