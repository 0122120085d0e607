"""Command lines of the control-plane components (pure: paths and ports in, argv out)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .binaries import Binaries
from .common import (
    APISERVER,
    CONTROLLER_MANAGER,
    ETCD,
    HOST,
    NODE_LEASE_GRACE,
    SCHEDULER,
    SERVICE_ACCOUNT_ISSUER,
    SERVICE_CLUSTER_IP_RANGE,
)


@dataclass(frozen=True)
class Layout:
    """Where one control plane keeps its files, and its ports."""

    state_dir: Path
    binaries: Binaries
    ports: dict[str, int]

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def etcd_url(self) -> str:
        return f"http://{HOST}:{self.ports['etcd-client']}"

    def kubeconfig(self, component: str) -> str:
        return str(self.state_dir / f"{component}.kubeconfig")


def etcd(layout: Layout, data_dir: Path) -> list[str]:
    client = layout.etcd_url
    peer = f"http://{HOST}:{layout.ports['etcd-peer']}"
    return [
        str(layout.binaries.path(ETCD)),
        "--name=default",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver(layout: Layout) -> list[str]:
    pki = layout.pki
    return [
        str(layout.binaries.path(APISERVER)),
        f"--etcd-servers={layout.etcd_url}",
        f"--bind-address={HOST}",
        f"--advertise-address={HOST}",
        f"--secure-port={layout.ports['apiserver']}",
        f"--cert-dir={pki / 'apiserver-generated'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--authorization-mode=Node,RBAC",
        "--anonymous-auth=true",
        "--endpoint-reconciler-type=none",
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        "--allow-privileged=true",
        "--profiling=false",
    ]


def controller_manager(layout: Layout) -> list[str]:
    pki = layout.pki
    kubeconfig = layout.kubeconfig(CONTROLLER_MANAGER)
    return [
        str(layout.binaries.path(CONTROLLER_MANAGER)),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={layout.ports['controller-manager']}",
        f"--cert-dir={pki / 'controller-manager-generated'}",
        "--leader-elect=false",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=true",
        f"--flex-volume-plugin-dir={layout.state_dir / 'flexvolume'}",
        "--controllers=*",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        # A stopped node is noticed in seconds, not the default 50 s.
        f"--node-monitor-grace-period={NODE_LEASE_GRACE}",
        "--node-monitor-period=2s",
        "--profiling=false",
    ]


def scheduler(layout: Layout) -> list[str]:
    kubeconfig = layout.kubeconfig(SCHEDULER)
    return [
        str(layout.binaries.path(SCHEDULER)),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={layout.ports['scheduler']}",
        f"--cert-dir={layout.pki / 'scheduler-generated'}",
        "--leader-elect=false",
        "--profiling=false",
    ]
