"""HTTP to the API server: credentials, TLS and a connection pool, on urllib3 alone.

The operator used the official ``kubernetes`` client only for this (its URL building,
its auth header and its urllib3 pool). Importing that package costs about 32 MB of
RSS, and kopf imports it at its own import when it is installed, only to offer a
login handler this operator replaces; ``cachetier.main`` keeps it out of the
operator's process, and this module speaks the little HTTP the operator needs.

Credentials come from the in-cluster ServiceAccount or from a kubeconfig (the
current context): a bearer token (inline or ``tokenFile``), a client certificate
(file or ``-data``), basic auth, the CA (file or ``-data``) or
``insecure-skip-tls-verify``. ``exec`` and ``auth-provider`` plugins other than a
cached ``access-token`` are refused with a clear error, as kopf's own kubeconfig
login (which the operator's watches use) cannot run them either.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
"""A projected ServiceAccount token file is rotated by the kubelet: read it again this often."""


class ConfigError(Exception):
    """No usable credentials (no in-cluster ServiceAccount, no usable kubeconfig)."""


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are."""

    server: str
    ca_file: str | None = None
    ca_data: str | None = None
    insecure: bool = False
    token: str | None = None
    token_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = field(default=None, repr=False)
    key_data: bytes | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = None


def in_cluster() -> Credentials | None:
    """The Pod's ServiceAccount, or None outside a cluster."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = SERVICE_ACCOUNT / "token"
    if not host or not token.exists():
        return None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    ca = SERVICE_ACCOUNT / "ca.crt"
    return Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(ca) if ca.exists() else None,
        token_file=str(token),
    )


def _b64(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"))


def from_kubeconfig(config_file: str) -> Credentials:
    """The current context of one kubeconfig file (relative paths: from its directory)."""
    try:
        with open(config_file, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {config_file}: {exc}") from exc
    base = Path(config_file).resolve().parent

    def named(section: str, name: str) -> dict[str, Any]:
        for item in config.get(section) or []:
            if item.get("name") == name:
                key = section[:-1]  # clusters -> cluster
                return dict(item.get(key) or {})
        raise ConfigError(f"kubeconfig {config_file}: no {section[:-1]} named {name!r}")

    current = config.get("current-context")
    if not current:
        raise ConfigError(f"kubeconfig {config_file}: current-context is not set")
    context = named("contexts", current)
    cluster = named("clusters", str(context.get("cluster")))
    user = named("users", str(context.get("user"))) if context.get("user") else {}

    def local(value: Any) -> str | None:
        return str(base / str(value)) if value else None

    if "exec" in user or ("auth-provider" in user and not _provider_token(user)):
        raise ConfigError(
            f"kubeconfig {config_file}: user {context.get('user')!r} authenticates through "
            "an exec or auth-provider plugin, which the operator cannot run; use a token "
            "or a client certificate (in a cluster the operator uses its ServiceAccount)"
        )
    cert_data = key_data = None
    if user.get("client-certificate-data"):
        cert_data = _b64(user["client-certificate-data"])
    if user.get("client-key-data"):
        key_data = _b64(user["client-key-data"])
    ca_data = None
    if cluster.get("certificate-authority-data"):
        ca_data = _b64(cluster["certificate-authority-data"]).decode("ascii")
    server = str(cluster.get("server") or "")
    if not server:
        raise ConfigError(
            f"kubeconfig {config_file}: cluster {context.get('cluster')!r} has no server"
        )
    return Credentials(
        server=server.rstrip("/"),
        ca_file=local(cluster.get("certificate-authority")),
        ca_data=ca_data,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=user.get("token") or _provider_token(user),
        token_file=local(user.get("tokenFile")),
        cert_file=local(user.get("client-certificate")),
        key_file=local(user.get("client-key")),
        cert_data=cert_data,
        key_data=key_data,
        username=user.get("username"),
        password=user.get("password"),
    )


def _provider_token(user: dict[str, Any]) -> str | None:
    token = ((user.get("auth-provider") or {}).get("config") or {}).get("access-token")
    return str(token) if token else None


def load(kubeconfig: str | None = None) -> Credentials:
    """In-cluster credentials, else the kubeconfig: ``kubeconfig``, else the first path
    of ``KUBECONFIG``, else ``~/.kube/config``."""
    if kubeconfig is None:
        found = in_cluster()
        if found is not None:
            return found
    path_ = (
        kubeconfig
        or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        or os.path.expanduser("~/.kube/config")
    )
    return from_kubeconfig(path_)


def _load_client_cert(ctx: ssl.SSLContext, creds: Credentials) -> None:
    """The client certificate and key into ``ctx``; ``-data`` ones through files in a
    private temporary directory that is gone again at once (ssl loads only files)."""
    if not (creds.cert_file or creds.cert_data):
        return
    with tempfile.TemporaryDirectory(prefix="cachetier-kube-") as tmp:
        cert, key = creds.cert_file, creds.key_file
        if creds.cert_data is not None:
            cert = os.path.join(tmp, "tls.crt")
            Path(cert).write_bytes(creds.cert_data)
        if creds.key_data is not None:
            key = os.path.join(tmp, "tls.key")
            Path(key).write_bytes(creds.key_data)
        assert cert is not None
        ctx.load_cert_chain(cert, key)


class ApiClient:
    """A pooled HTTP client for one API server."""

    def __init__(self, credentials: Credentials, *, maxsize: int = 64) -> None:
        self.credentials = credentials
        self.maxsize = maxsize
        self._token_lock = threading.Lock()
        self._token: tuple[float, str] | None = None
        headers = {"User-Agent": "cachetier-operator"}
        if credentials.server.startswith("https://"):
            ctx = ssl.create_default_context(cafile=credentials.ca_file, cadata=credentials.ca_data)
            if credentials.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            _load_client_cert(ctx, credentials)
            self.pool: urllib3.PoolManager = urllib3.PoolManager(
                num_pools=4, maxsize=maxsize, ssl_context=ctx, headers=headers
            )
        else:
            self.pool = urllib3.PoolManager(num_pools=4, maxsize=maxsize, headers=headers)

    def clone(self) -> ApiClient:
        """Another client with the same credentials and a pool of its own."""
        return ApiClient(self.credentials, maxsize=self.maxsize)

    def close(self) -> None:
        self.pool.clear()

    def auth_headers(self) -> dict[str, str]:
        creds = self.credentials
        if creds.token_file:
            with self._token_lock:
                now = time.monotonic()
                if self._token is None or now - self._token[0] > TOKEN_REREAD_SECONDS:
                    self._token = (now, Path(creds.token_file).read_text().strip())
                token: str | None = self._token[1]
        else:
            token = creds.token
        if token:
            return {"Authorization": f"Bearer {token}"}
        if creds.username is not None:
            pair = f"{creds.username}:{creds.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        return {}

    def forget_token(self) -> None:
        """Read the token file again on the next request (after a 401)."""
        with self._token_lock:
            self._token = None

    def request(
        self,
        method: str,
        resource_path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | tuple[float, float] = 30,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """One request; the response unread when ``stream``, else read into memory."""
        url = self.credentials.server + resource_path
        if query:
            url += "?" + urlencode(query)
        all_headers = {**(headers or {}), **self.auth_headers()}
        data = None if body is None else json.dumps(body).encode()
        if isinstance(timeout, tuple):
            to = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        else:
            to = urllib3.Timeout(total=timeout)
        response = self.pool.request(
            method,
            url,
            body=data,
            headers=all_headers,
            timeout=to,
            preload_content=not stream,
            redirect=False,
            retries=urllib3.Retry(3, redirect=False),
        )
        if response.status == 401 and self.credentials.token_file:
            self.forget_token()
        return response
