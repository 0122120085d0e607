"""The operator's entry point: a port another program holds is one clear line, exit 1."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from cachetier import main


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_check_port_names_the_port_and_the_way_out() -> None:
    with _listening() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(main.PortInUse) as exc:
            main.check_port("127.0.0.1", port, "metrics", "--metrics-port")
    text = str(exc.value)
    assert f"127.0.0.1:{port}" in text and "already in use" in text and "--metrics-port" in text
    main.check_port("127.0.0.1", 0, "metrics", "--metrics-port")  # 0: off, nothing to check


def test_liveness_url() -> None:
    assert main.liveness_host_port("http://0.0.0.0:8080/healthz") == ("0.0.0.0", 8080)
    assert main.liveness_host_port("http://127.0.0.1:18081/healthz") == ("127.0.0.1", 18081)


def test_operator_exits_at_once_with_one_line_when_liveness_port_is_taken() -> None:
    with _listening() as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "cachetier.main",
                "--kubeconfig",
                "/nonexistent",
                "--liveness",
                f"http://127.0.0.1:{port}/healthz",
                "--metrics-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("cachetier-operator: error: cannot listen for the liveness")
    assert "--liveness or CACHETIER_LIVENESS" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_watch_namespaces_from_flags_else_the_environment() -> None:
    from cachetier.main import watch_namespaces

    assert watch_namespaces(None, "") == []
    assert watch_namespaces(None, " team-a, team-b ,,") == ["team-a", "team-b"]
    assert watch_namespaces(["x", "x", "y"], "ignored") == ["x", "y"]
