"""Certificates (a self-made CA, serving and client certificates) and kubeconfigs."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

from .common import (
    ADMIN_USER,
    CLUSTER_NAME,
    CONTROLLER_MANAGER,
    FIRST_SERVICE_IP,
    SCHEDULER,
    ControlPlaneError,
    say,
)

# Bump when the set of files ensure_pki() creates changes: older PKI is then recreated.
_PKI_LAYOUT: Final = "2"

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
"""

_APISERVER_SANS = (
    "IP:127.0.0.1",
    f"IP:{FIRST_SERVICE_IP}",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)

# name -> (issuing CA, subject, extendedKeyUsage, subjectAltName or "")
_LEAF_CERTS: Final = {
    "apiserver": ("ca", "/CN=kube-apiserver", "serverAuth", ",".join(_APISERVER_SANS)),
    "admin": ("ca", f"/O=system:masters/CN={ADMIN_USER}", "clientAuth", ""),
    CONTROLLER_MANAGER: ("ca", "/CN=system:kube-controller-manager", "clientAuth", ""),
    SCHEDULER: ("ca", "/CN=system:kube-scheduler", "clientAuth", ""),
    # The API server's identity towards aggregated API servers (request-header auth).
    "front-proxy-client": ("front-proxy-ca", "/CN=front-proxy-client", "clientAuth", ""),
}


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def ensure_pki(pki: Path) -> None:
    """Create the CA, certificates and service-account keys in ``pki`` unless present."""
    marker = pki / ".complete"
    with contextlib.suppress(OSError):
        if marker.read_text().strip() == _PKI_LAYOUT:
            return
    if shutil.which("openssl") is None:
        raise ControlPlaneError("the openssl command is required to create certificates")
    say(f"creating certificates in {pki}")
    shutil.rmtree(pki, ignore_errors=True)
    pki.mkdir(parents=True)
    os.chmod(pki, 0o700)
    (pki / "openssl.cnf").write_text(_OPENSSL_CONFIG)
    days = "3650"
    for ca, cn in (("ca", "cachetier-local-ca"), ("front-proxy-ca", "cachetier-front-proxy-ca")):
        _openssl("genrsa", "-out", f"{ca}.key", "2048", cwd=pki)
        _openssl(
            "req", "-x509", "-new", "-sha256", "-key", f"{ca}.key", "-days", days,
            "-subj", f"/CN={cn}", "-config", "openssl.cnf", "-extensions", "v3_ca",
            "-out", f"{ca}.crt", cwd=pki,
        )  # fmt: skip
    for name, (ca, subject, usage, sans) in _LEAF_CERTS.items():
        ext = [
            "basicConstraints = critical,CA:FALSE",
            "keyUsage = critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage = {usage}",
            "authorityKeyIdentifier = keyid",
        ]
        if sans:
            ext.append(f"subjectAltName = {sans}")
        (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
        _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=pki)
        _openssl(
            "req", "-new", "-key", f"{name}.key", "-subj", subject, "-config", "openssl.cnf",
            "-out", f"{name}.csr", cwd=pki,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-sha256", "-in", f"{name}.csr", "-CA", f"{ca}.crt",
            "-CAkey", f"{ca}.key", "-set_serial", str(secrets.randbits(63)), "-days", days,
            "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki,
        )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        os.chmod(key, 0o600)
    marker.write_text(_PKI_LAYOUT + "\n")


def kubeconfig(server: str, pki: Path, user: str, cert: str) -> dict[str, Any]:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(f"{cert}.crt"),
                    "client-key-data": b64(f"{cert}.key"),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
    }


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
