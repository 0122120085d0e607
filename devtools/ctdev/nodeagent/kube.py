"""The agent's only Kubernetes API adapter: a small JSON REST client over urllib3.

It reads a kubeconfig itself (server, CA, client certificate or bearer token) so that the
agent does not import the heavy ``kubernetes`` package (half the agent's memory otherwise);
kubeconfigs that need ``exec``/``auth-provider`` plugins fall back to the ``kubernetes``
package's loader. Objects are plain dicts, exactly as the API sends them.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
import yaml

from .objects import Obj

JSON = "application/json"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """An HTTP error from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Gone(ApiError):
    """HTTP 410: the resourceVersion is too old; relist."""


def _named(items: list[Obj], name: str, field: str) -> Obj:
    for item in items or []:
        if item.get("name") == name:
            value = item.get(field)
            return value if isinstance(value, dict) else {}
    raise ValueError(f"kubeconfig has no {field} named {name!r}")


def _load_with_kubernetes(path: str) -> tuple[str, ssl.SSLContext, dict[str, str]]:
    """Fallback for kubeconfigs with auth plugins: let the kubernetes package resolve them."""
    from kubernetes import client, config  # heavy import, only when needed

    cfg = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if not cfg.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    headers = {}
    token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
    if token:
        headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
    return str(cfg.host), ctx, headers


def load_kubeconfig(path: str) -> tuple[str, ssl.SSLContext, dict[str, str]]:
    """Server URL, an SSL context and auth headers from the kubeconfig's current context."""
    base = Path(path).resolve().parent
    doc = yaml.safe_load(Path(path).read_text()) or {}
    ctx_name = doc.get("current-context") or ""
    context = _named(doc.get("contexts", []), ctx_name, "context")
    cluster = _named(doc.get("clusters", []), context.get("cluster", ""), "cluster")
    user = _named(doc.get("users", []), context.get("user", ""), "user")
    if "exec" in user or "auth-provider" in user:
        return _load_with_kubernetes(path)

    def file_of(key: str) -> str | None:
        value = user.get(key) or cluster.get(key)
        return str(base / value) if value else None

    ssl_ctx = ssl.create_default_context()
    if cluster.get("insecure-skip-tls-verify"):
        ssl_ctx.check_hostname = False
        ssl_ctx.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        ssl_ctx = ssl.create_default_context(cadata=ca)
    elif cluster.get("certificate-authority"):
        ssl_ctx = ssl.create_default_context(cafile=file_of("certificate-authority"))

    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    if cert_data and key_data:
        # ssl wants files; write them privately, load, and remove them at once.
        with tempfile.TemporaryDirectory(prefix="nodeagent-tls-") as tmp:
            cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
            for target, data in ((cert, cert_data), (key, key_data)):
                fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(base64.b64decode(data))
            ssl_ctx.load_cert_chain(str(cert), str(key))
    elif user.get("client-certificate"):
        ssl_ctx.load_cert_chain(str(file_of("client-certificate")), file_of("client-key"))

    headers: dict[str, str] = {}
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(str(file_of("tokenFile"))).read_text().strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return str(cluster.get("server", "")).rstrip("/"), ssl_ctx, headers


def api_path(
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    sub: str | None = None,
    group: str = "",
) -> str:
    """The URL path of a collection or object: ``api_path("pods", "ns", "p", "status")``."""
    root = f"/apis/{group}" if group else "/api/v1"
    parts = [root]
    if namespace:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(resource)
    if name:
        parts.append(quote(name, safe=""))
    if sub:
        parts.append(sub)
    return "/".join(parts)


class Kube:
    """A thread-safe JSON client for one API server."""

    def __init__(self, kubeconfig: str, *, user_agent: str = "cachetier-nodeagent") -> None:
        self.server, ssl_ctx, headers = load_kubeconfig(kubeconfig)
        self._headers = {"Accept": JSON, "User-Agent": user_agent, **headers}
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=32, ssl_context=ssl_ctx)

    def _open(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None,
        body: Any,
        content_type: str,
        timeout: float,
        stream: bool,
    ) -> urllib3.BaseHTTPResponse:
        url = self.server + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        resp = self._pool.request(
            method,
            url,
            body=data,
            headers=headers,
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
            retries=False,
            preload_content=not stream,
        )
        if resp.status >= 400:
            raw = resp.data if not stream else resp.read()
            resp.release_conn()
            try:
                status_obj = json.loads(raw)
                message = str(status_obj.get("message", raw[:300]))
                reason = str(status_obj.get("reason", ""))
            except ValueError:
                message, reason = raw[:300].decode(errors="replace"), ""
            cls = Gone if resp.status == 410 else ApiError
            raise cls(resp.status, reason, message)
        return resp

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout: float = 30.0,
    ) -> Obj:
        """One request; returns the decoded JSON body (``{}`` when empty)."""
        resp = self._open(method, path, query, body, content_type, timeout, stream=False)
        raw = resp.data
        return json.loads(raw) if raw else {}

    def get(self, path: str, query: dict[str, Any] | None = None) -> Obj | None:
        """GET an object; None when it does not exist."""
        try:
            return self.request("GET", path, query=query)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def create(self, path: str, body: Obj) -> Obj:
        """POST a new object to a collection path."""
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Any, content_type: str = MERGE) -> Obj:
        """PATCH an object (JSON merge patch by default)."""
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: Obj | None = None) -> bool:
        """DELETE an object; False when it was already gone."""
        try:
            self.request("DELETE", path, body=body)
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    def watch(self, path: str, query: dict[str, Any], timeout: float) -> Iterator[Obj]:
        """Stream watch events (``{"type": ..., "object": ...}``) until the server ends it."""
        resp = self._open("GET", path, {**query, "watch": "1"}, None, JSON, timeout, stream=True)
        buf = b""
        try:
            for chunk in resp.stream(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()
