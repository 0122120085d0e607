"""The operator's HTTP to the API server (``cachetier.kube.transport``): credentials from
a kubeconfig or the ServiceAccount, and requests as the API server sees them (a real
HTTP server on loopback; the e2e tier drives the real API server with client
certificates)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from cachetier.kube import transport
from cachetier.kube.client import Kube, NotFound

ROOT = Path(__file__).resolve().parents[2]


def _kubeconfig(tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any]) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "contexts": [
                    {"name": "other", "context": {"cluster": "x", "user": "x"}},
                    {"name": "c", "context": {"cluster": "k", "user": "u"}},
                ],
                "clusters": [{"name": "k", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    return str(path)


def test_kubeconfig_current_context_token_and_relative_paths(tmp_path: Path) -> None:
    path = _kubeconfig(
        tmp_path,
        {"tokenFile": "tok"},
        {"server": "https://127.0.0.1:6443/", "certificate-authority": "ca.crt"},
    )
    creds = transport.from_kubeconfig(path)
    assert creds.server == "https://127.0.0.1:6443"
    assert creds.ca_file == str(tmp_path / "ca.crt")
    assert creds.token_file == str(tmp_path / "tok")


def test_kubeconfig_data_fields_are_decoded(tmp_path: Path) -> None:
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    path = _kubeconfig(
        tmp_path,
        {"client-certificate-data": b64("CERT"), "client-key-data": b64("KEY")},
        {"server": "https://h", "certificate-authority-data": b64("CA PEM")},
    )
    creds = transport.from_kubeconfig(path)
    assert creds.ca_data == "CA PEM"
    assert (creds.cert_data, creds.key_data) == (b"CERT", b"KEY")
    assert "KEY" not in repr(creds)


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"exec": {"command": "aws"}}, "exec or auth-provider plugin"),
        ({"auth-provider": {"name": "oidc", "config": {}}}, "exec or auth-provider plugin"),
    ],
)
def test_kubeconfig_plugins_are_refused_clearly(
    tmp_path: Path, user: dict[str, Any], message: str
) -> None:
    path = _kubeconfig(tmp_path, user, {"server": "https://h"})
    with pytest.raises(transport.ConfigError, match=message):
        transport.from_kubeconfig(path)


def test_kubeconfig_without_current_context_or_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("clusters: []\n")
    with pytest.raises(transport.ConfigError, match="current-context is not set"):
        transport.from_kubeconfig(str(tmp_path / "empty"))
    with pytest.raises(transport.ConfigError, match="cannot read kubeconfig"):
        transport.from_kubeconfig(str(tmp_path / "absent"))


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "type": self.headers.get("Content-Type"),
                "body": json.loads(body) if body else None,
            }
        )
        if self.path.startswith("/api/v1/namespaces/ns/secrets/absent"):
            status, answer = 404, {"kind": "Status", "reason": "NotFound"}
        else:
            status, answer = 200, {"kind": "ConfigMap", "metadata": {"name": "cm"}}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = do_DELETE = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_requests_carry_the_token_the_query_and_a_json_body(server: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    client = transport.ApiClient(transport.Credentials(server=server, token_file=str(token)))
    kube = Kube(client)
    kube.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"}}
    )
    assert kube.get("Secret", "ns", "absent") is None
    with pytest.raises(NotFound):
        kube.request("GET", "/api/v1/namespaces/ns/secrets/absent")
    first = _Recorder.seen[0]
    assert first["method"] == "PATCH"
    assert first["path"] == (
        "/api/v1/namespaces/ns/configmaps/cm?fieldManager=cachetier-operator&force=true"
    )
    assert first["type"] == "application/apply-patch+yaml"
    assert first["body"]["metadata"] == {"name": "cm", "namespace": "ns"}
    assert first["auth"] == "Bearer first"
    # A rotated token file is read again after the re-read interval (or a 401).
    token.write_text("second\n")
    client.forget_token()
    kube.request("GET", "/api/v1/namespaces/ns/configmaps/cm")
    assert _Recorder.seen[-1]["auth"] == "Bearer second"
    assert kube.writes["PATCH"] == 1


def test_basic_auth_and_no_auth(server: str) -> None:
    basic = transport.ApiClient(transport.Credentials(server=server, username="a", password="b"))
    Kube(basic).request("GET", "/api/v1/namespaces/ns/configmaps/cm")
    assert _Recorder.seen[-1]["auth"] == "Basic " + base64.b64encode(b"a:b").decode()
    Kube(transport.ApiClient(transport.Credentials(server=server))).request("GET", "/api")
    assert _Recorder.seen[-1]["auth"] is None


def test_in_cluster_needs_the_service_host_and_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(transport, "SERVICE_ACCOUNT", tmp_path)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert transport.in_cluster() is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    assert transport.in_cluster() is None  # no token file: not in a pod
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("ca")
    creds = transport.in_cluster()
    assert creds == transport.Credentials(
        server="https://[fd00::1]:6443",
        ca_file=str(tmp_path / "ca.crt"),
        token_file=str(tmp_path / "token"),
    )
    assert transport.load() == creds  # in-cluster first when no kubeconfig is named


def test_the_operator_process_does_not_import_the_kubernetes_client() -> None:
    """kopf imports ``kubernetes`` at its import when it is installed (32 MB of RSS); the
    entry point keeps it out, and a process importing the module for a test keeps it."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['cachetier-operator', '--help']\n"
        "try:\n"
        "    runpy.run_module('cachetier.main', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sys.modules.get('kubernetes') is not None, 'kopf' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.split()[-2:] == ["False", "True"]
    plain = subprocess.run(
        [sys.executable, "-c", "import cachetier.main, kubernetes, sys; print('ok')"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert plain.stdout.strip() == "ok"
