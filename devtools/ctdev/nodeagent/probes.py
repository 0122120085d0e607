"""Probe state machines (readiness, liveness, startup) and probe execution.

Kubernetes semantics: a probe is first run ``initialDelaySeconds`` after the container
starts, then every ``periodSeconds``; ``successThreshold``/``failureThreshold`` consecutive
results flip its result. Readiness and startup start as failed, liveness as succeeded.
One deliberate difference: until a readiness or startup probe first succeeds after a
(re)start, it is retried every ``fast_interval`` (default 0.1 s) instead of every period,
so Pods turn Ready as soon as they really are (the result is still the probe's).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from .objects import Obj


@dataclass
class ProbeState:
    """One probe of one container."""

    kind: str
    """``readiness``, ``liveness`` or ``startup``."""
    spec: Obj
    """The probe from the container spec."""
    fast_interval: float = 0.1
    """Retry interval until the first success (readiness and startup probes)."""
    result: bool = False
    """The current result (after thresholds)."""
    ever_succeeded: bool = False
    """Succeeded at least once since the container (re)started."""
    next_at: float = 0.0
    """Monotonic time of the next run."""
    _successes: int = field(default=0, repr=False)
    _failures: int = field(default=0, repr=False)

    def _num(self, key: str, default: int) -> int:
        value = self.spec.get(key)
        return int(value) if value else default

    @property
    def period(self) -> float:
        """Seconds between runs."""
        return float(self._num("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        """Seconds before a run counts as failed."""
        return float(self._num("timeoutSeconds", 1))

    def reset(self, started: float) -> None:
        """The container (re)started at monotonic time ``started``."""
        self.result = self.kind == "liveness"
        self.ever_succeeded = False
        self._successes = self._failures = 0
        self.next_at = started + float(self._num("initialDelaySeconds", 0))

    def record(self, ok: bool, now: float) -> None:
        """Account one run's outcome and schedule the next."""
        if ok:
            self._successes += 1
            self._failures = 0
            if self._successes >= self._num("successThreshold", 1):
                self.result = True
                self.ever_succeeded = True
        else:
            self._failures += 1
            self._successes = 0
            if self._failures >= self._num("failureThreshold", 3):
                self.result = False
        fast = self.kind != "liveness" and not self.ever_succeeded
        self.next_at = now + (min(self.period, self.fast_interval) if fast else self.period)


@dataclass
class ProbeTarget:
    """What a probe needs to know about its container."""

    pod_ip: str
    ports: dict[str, int]
    """Named container ports."""
    run_exec: Callable[[list[str], float], bool]
    """Runs an exec probe's command locally; True on exit code 0."""


def _port(value: object, target: ProbeTarget) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text) if text.isdigit() else target.ports.get(text, 0)


def run_probe(spec: Obj, target: ProbeTarget, timeout: float) -> bool:
    """Run one probe; True on success."""
    try:
        if "exec" in spec:
            return target.run_exec([str(a) for a in spec["exec"].get("command") or []], timeout)
        if "tcpSocket" in spec:
            tcp = spec["tcpSocket"]
            host = str(tcp.get("host") or target.pod_ip)
            with socket.create_connection((host, _port(tcp.get("port"), target)), timeout):
                return True
        if "httpGet" in spec:
            return _http(spec["httpGet"], target, timeout)
        if "grpc" in spec:  # no gRPC health client here: a connection counts
            port = _port(spec["grpc"].get("port"), target)
            with socket.create_connection((target.pod_ip, port), timeout):
                return True
    except (OSError, subprocess.SubprocessError, http.client.HTTPException):
        return False
    return True


def _http(get: Obj, target: ProbeTarget, timeout: float) -> bool:
    host = str(get.get("host") or target.pod_ip)
    port = _port(get.get("port"), target)
    conn: http.client.HTTPConnection
    if str(get.get("scheme", "HTTP")).upper() == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {str(h["name"]): str(h["value"]) for h in get.get("httpHeaders") or []}
        conn.request("GET", str(get.get("path") or "/"), headers=headers)
        status = conn.getresponse().status
        return 200 <= status < 400
    finally:
        conn.close()
