"""The README's install commands, verbatim, against a real API server.

Every ``kubectl`` and ``helm`` command in the ``sh`` blocks of the README's "Install on a
cluster" section is run as written, plus only what makes it a server-side dry run
(``--dry-run=server``) and points it at a control plane of the test's own
(``--kubeconfig``; a new user's cluster has nothing of CacheTier yet, while the session's
has the objects other tests applied with kubectl, which Helm would refuse to adopt). A
change that breaks one (a renamed directory, a chart value, a refused object) fails
here. The namespaces the commands install into are created first (a dry run creates
nothing).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KubeCluster
from tests.e2e.test_helm import helm

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]


def install_commands() -> list[list[str]]:
    """The kubectl/helm commands of the README's install section, continuation lines
    joined and comments dropped."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Install on a cluster\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] in ("kubectl", "helm"):
                commands.append(words)
    return commands


def test_the_readme_has_the_install_commands() -> None:
    commands = [" ".join(c[:3]) for c in install_commands()]
    assert "kubectl apply -k" in commands and "kubectl apply -f" in commands, commands
    assert sum(c.startswith("helm install") for c in commands) == 2, commands


@pytest.fixture(scope="module")
def new_cluster() -> Iterator[KubeCluster]:
    """A control plane of its own (no node agent): nothing installed, as a new user's."""
    from ctdev.controlplane import ControlPlane

    state_dir = REPO / ".local" / f"readme-{os.getpid()}"
    control_plane = ControlPlane(state_dir, node_agent=False)
    try:
        control_plane.start()
        yield KubeCluster(
            kubeconfig=str(control_plane.kubeconfig),
            kubectl=str(control_plane.kubectl_path),
            control_plane=control_plane,
        )
    finally:
        control_plane.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_every_install_command_of_the_readme_works(new_cluster: KubeCluster) -> None:
    kube_cluster = new_cluster
    commands = install_commands()
    for words in commands:
        for flag in ("-n", "--namespace"):
            if flag in words:
                kube_cluster.run_kubectl(
                    "create", "namespace", words[words.index(flag) + 1], check=False
                )
        for value in words:
            for ns in re.findall(r"watchNamespaces=\{([^}]*)\}", value):
                for name in ns.split(","):
                    kube_cluster.run_kubectl("create", "namespace", name, check=False)
    kube_cluster.run_kubectl("apply", "-f", str(REPO / "manifests" / "namespace.yaml"))
    for words in commands:
        if words[0] == "helm":
            helm(kube_cluster, *words[1:], "--dry-run=server")
            continue
        proc = subprocess.run(
            [kube_cluster.kubectl, "--kubeconfig", kube_cluster.kubeconfig, *words[1:],
             "--dry-run=server"],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"{' '.join(words)}:\n{proc.stdout}\n{proc.stderr}"
