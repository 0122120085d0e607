"""Plain HTTPS GETs (health endpoints) without any proxy."""

from __future__ import annotations

import contextlib
import ssl
import urllib.error
import urllib.request


def http_get(url: str, context: ssl.SSLContext | None, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url`` without any proxy; returns (status, body), status 0 on connection errors."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        with contextlib.closing(err):
            return int(err.code), err.read()
    except (urllib.error.URLError, OSError, ValueError):
        return 0, b""


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
