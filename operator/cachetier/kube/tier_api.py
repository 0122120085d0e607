"""The CLI's Kubernetes calls: load a kubeconfig, GET, LIST and merge-patch CacheTiers.

Every failure becomes :class:`TierApiError` with one line a person can act on
(not found, forbidden, rejected, unreachable API, bad kubeconfig).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import kubernetes
import urllib3

from cachetier import names
from cachetier.cli_format import api_error_message, field

JsonObj = dict[str, Any]


class TierApiError(Exception):
    """A failed call, as one line."""


def _kubeconfig_files(kubeconfig: str) -> list[str]:
    return [p for p in kubeconfig.split(os.pathsep) if p]


def connect(kubeconfig: str) -> tuple[Any, str]:
    """A CustomObjectsApi for ``kubeconfig`` and its current context's namespace."""
    files = _kubeconfig_files(kubeconfig)
    if not any(Path(p).is_file() for p in files):
        raise TierApiError(f"no kubeconfig at {kubeconfig} (set KUBECONFIG or --kubeconfig)")
    configuration = kubernetes.client.Configuration()
    configuration.retries = 1  # fail in seconds, not a minute, when the API is down
    try:
        _, context = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
        client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, persist_config=False, client_configuration=configuration
        )
    except (kubernetes.config.ConfigException, OSError, ValueError, TypeError) as exc:
        raise TierApiError(f"cannot load kubeconfig {kubeconfig}: {exc}") from None
    namespace = field(context, "context", "namespace") or "default"
    return kubernetes.client.CustomObjectsApi(client), str(namespace)


_TIMEOUT = (5, 30)  # connect, read (seconds)


@contextmanager
def _api_errors(api: Any, namespace: str, name: str | None = None) -> Iterator[None]:
    """Turn the client's exceptions into one-line :class:`TierApiError`."""
    try:
        yield
    except kubernetes.client.ApiException as exc:
        if not exc.status:  # the client's own failure, e.g. a TLS handshake
            raise _unreachable(api, exc.reason) from None
        raise TierApiError(
            api_error_message(exc.status, exc.body, name=name, namespace=namespace)
        ) from None
    except urllib3.exceptions.HTTPError as exc:
        raise _unreachable(api, getattr(exc, "reason", None) or exc) from None


def _unreachable(api: Any, reason: object) -> TierApiError:
    # urllib3 nests "Pool(host=...): Max retries ...: NewConnectionError(...: [Errno 111]
    # Connection refused)"; the last clause is the part a person can act on.
    detail = " ".join(str(reason).split()).rsplit(": ", 1)[-1].rstrip(")'\"")
    host = api.api_client.configuration.host
    return TierApiError(f"cannot reach the Kubernetes API at {host}: {detail}")


def get_tier(api: Any, namespace: str, name: str) -> JsonObj:
    """GET one CacheTier."""
    with _api_errors(api, namespace, name):
        return cast(
            JsonObj,
            api.get_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                namespace,
                names.PLURAL,
                name,
                _request_timeout=_TIMEOUT,
            ),
        )


def list_tiers(api: Any, namespace: str | None) -> list[JsonObj]:
    """LIST the CacheTiers of ``namespace`` (None: every namespace), sorted by name."""
    with _api_errors(api, namespace or "", None):
        if namespace is None:
            answer = api.list_cluster_custom_object(
                names.GROUP, names.VERSION, names.PLURAL, _request_timeout=_TIMEOUT
            )
        else:
            answer = api.list_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.PLURAL, _request_timeout=_TIMEOUT
            )
    items = cast(list[JsonObj], answer.get("items") or [])
    return sorted(
        items,
        key=lambda t: (
            field(t, "metadata", "namespace") or "",
            field(t, "metadata", "name") or "",
        ),
    )


def patch_tier(api: Any, namespace: str, name: str, patch: JsonObj) -> JsonObj:
    """Merge-patch one CacheTier under field manager ``cachetier-cli``; returns the result."""
    with _api_errors(api, namespace, name):
        return cast(
            JsonObj,
            api.patch_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                namespace,
                names.PLURAL,
                name,
                patch,
                field_manager=names.CLI_FIELD_MANAGER,
                _request_timeout=_TIMEOUT,
            ),
        )


def tier_events(api: Any, namespace: str, name: str) -> list[JsonObj]:
    """The Events whose object is CacheTier ``name`` (any order)."""
    core = kubernetes.client.CoreV1Api(api.api_client)
    with _api_errors(api, namespace, name):
        answer = core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind={names.KIND}",
            _request_timeout=_TIMEOUT,
        )
    return cast(list[JsonObj], api.api_client.sanitize_for_serialization(answer.items))
