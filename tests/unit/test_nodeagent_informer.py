"""Unit tests for the agent's API client and informers against a fake API server.

The fake server speaks plain HTTP on 127.0.0.1: list, watch (newline-delimited events),
a 410 Gone that forces a relist, and error statuses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from ctdev.nodeagent.informer import Informer
from ctdev.nodeagent.kube import MERGE, ApiError, Kube, api_path


def cm(name: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)}}


class FakeApi(BaseHTTPRequestHandler):
    """Serves /api/v1/configmaps (list and watch) and a few error cases."""

    lists: list[tuple[list[dict[str, Any]], str]] = []
    watches: list[list[dict[str, Any]]] = []
    seen: list[str] = []
    release = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.seen.append(f"{url.path}?watch={query.get('watch')}&rv={query.get('resourceVersion')}")
        if url.path == "/api/v1/namespaces/ns/configmaps/missing":
            self._send(404, {"kind": "Status", "reason": "NotFound", "message": "nope"})
        elif url.path != "/api/v1/configmaps":
            self._send(403, {"kind": "Status", "reason": "Forbidden", "message": "denied"})
        elif query.get("watch") != "1":
            items, rv = self.lists.pop(0)
            self._send(200, {"items": items, "metadata": {"resourceVersion": rv}})
        else:
            events = self.watches.pop(0) if self.watches else None
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            if events is None:
                self.release.wait(10)
                return
            for event in events:
                self.wfile.write(json.dumps(event).encode() + b"\n")
                self.wfile.flush()

    def do_PATCH(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        self._send(200, {"echo": body, "type": self.headers["Content-Type"]})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Kube]:
    FakeApi.lists = [
        ([cm("a", 1), cm("b", 2)], "10"),
        ([cm("a", 11), cm("c", 12)], "20"),
    ]
    FakeApi.watches = [
        [
            {"type": "MODIFIED", "object": cm("a", 11)},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "11"}}},
            {"type": "ADDED", "object": cm("c", 12)},
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}},
        ]
    ]
    FakeApi.seen = []
    FakeApi.release = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "current-context": "fake",
                "contexts": [{"name": "fake", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"},
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t0k3n"}}],
            }
        )
    )
    try:
        yield Kube(str(kubeconfig))
    finally:
        FakeApi.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_informer_lists_watches_and_relists_after_gone(api: Kube) -> None:
    events: list[tuple[str, str, str]] = []
    done = threading.Event()

    def handler(kind: str, obj: dict[str, Any]) -> None:
        md = obj["metadata"]
        events.append((kind, md["name"], md["resourceVersion"]))
        if len(events) == 7:
            done.set()

    informer = Informer(api, api_path("configmaps"), name="cm", handler=handler)
    informer.start()
    assert done.wait(10), events
    informer.stop()
    assert events == [
        ("ADDED", "a", "1"),
        ("ADDED", "b", "2"),
        ("MODIFIED", "a", "11"),
        ("ADDED", "c", "12"),
        ("DELETED", "b", "2"),  # vanished while the watch was broken
        ("ADDED", "a", "11"),
        ("ADDED", "c", "12"),
    ]
    assert informer.synced.is_set()
    assert informer.get("ns", "b") is None and informer.get("ns", "c") == cm("c", 12)
    assert sorted(o["metadata"]["name"] for o in informer.items("ns")) == ["a", "c"]
    for _ in range(100):  # the re-watch after the relist follows at once
        if len(FakeApi.seen) >= 4:
            break
        threading.Event().wait(0.02)
    assert FakeApi.seen[:4] == [
        "/api/v1/configmaps?watch=None&rv=None",
        "/api/v1/configmaps?watch=1&rv=10",
        "/api/v1/configmaps?watch=None&rv=None",
        "/api/v1/configmaps?watch=1&rv=20",
    ]


def test_client_errors_and_patch(api: Kube) -> None:
    assert api.get(api_path("configmaps", "ns", "missing")) is None
    with pytest.raises(ApiError) as err:
        api.get("/api/v1/secrets")
    assert err.value.status == 403 and err.value.reason == "Forbidden"
    reply = api.patch(api_path("pods", "ns", "p", "status"), {"status": {"phase": "Running"}})
    assert reply == {"echo": {"status": {"phase": "Running"}}, "type": MERGE}
