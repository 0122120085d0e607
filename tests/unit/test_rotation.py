"""Password rotation (pure stages, and the whole flow through gather/decide/act with an
in-memory API and a fake ACL): the new password is added beside the old on every
server, consumers are told it and roll, the old one is removed last; nothing restarts
the Redis pods."""

from __future__ import annotations

import base64
from typing import Any

from cachetier import names
from cachetier.ports import AclUpdate, Target
from cachetier.reconcile import rotation
from cachetier.reconcile.rotation import Server, password_hash
from tests.unit.test_decide import NS, World


def _server(*passwords: str) -> Server:
    return Server("p-0", "10.0.0.1", 6379, False, frozenset(password_hash(p) for p in passwords))


def test_stages_follow_what_the_servers_hold() -> None:
    assert rotation.stage("new", None, None, True) == ""
    assert rotation.stage("new", "old", None, True) == rotation.ADDING
    assert rotation.stage("new", "old", (_server("old"),), True) == rotation.ADDING
    silent = Server("p-1", "10.0.0.2", 6379, False, None)
    assert rotation.stage("new", "old", (_server("old", "new"), silent), True) == rotation.ADDING
    assert rotation.stage("new", "old", (_server("old", "new"),), False) == rotation.CONSUMERS
    assert rotation.stage("new", "old", (_server("old", "new"),), True) == rotation.REMOVING
    assert rotation.stage("new", "old", (_server("new"),), True) == rotation.DONE


def test_the_consumer_revision_reveals_nothing_and_changes_with_the_password() -> None:
    a, b = rotation.auth_revision("pw-1", "op"), rotation.auth_revision("pw-2", "op")
    assert a != b and "pw" not in a and len(a) == 16
    assert rotation.auth_revision("pw-1", "other") != a


def test_a_workload_is_rolled_out_only_when_no_old_pod_is_left() -> None:
    def dep(revision: str, **status: int) -> dict[str, Any]:
        return {
            "kind": "Deployment",
            "metadata": {"generation": 2},
            "spec": {"replicas": 2, "template": {"metadata": {"annotations": {
                names.ANNOTATION_AUTH_REVISION: revision}}}},
            "status": {"observedGeneration": 2, **status},
        }  # fmt: skip

    assert rotation.rolled_out(dep("r", updatedReplicas=2, replicas=2), "r")
    assert not rotation.rolled_out(dep("r", updatedReplicas=2, replicas=3), "r")  # an old pod
    assert not rotation.rolled_out(dep("r", updatedReplicas=1, replicas=2), "r")
    assert not rotation.rolled_out(dep("q", updatedReplicas=2, replicas=2), "r")


class FakeAcl:
    """Each server's passwords for user ``default``, as ACL SETUSER/GETUSER would."""

    def __init__(self) -> None:
        self.passwords: dict[str, set[str]] = {}
        self.updates: list[AclUpdate] = []

    def password_hashes(self, target: Target, user: str) -> frozenset[str] | None:
        assert user == "default" and target.username == names.OPERATOR_USER
        return frozenset(password_hash(p) for p in self.passwords.get(target.host, set()))

    def update(self, update: AclUpdate) -> None:
        self.updates.append(update)
        held = self.passwords.setdefault(update.target.host, set())
        held |= set(update.add)
        held -= set(update.remove)


def _secret(w: World, name: str, key: str) -> str | None:
    data = (w.kube.get("Secret", NS, name) or {}).get("data") or {}
    return base64.b64decode(data[key]).decode() if key in data else None


def _template_hash(w: World) -> str:
    sts = w.kube.get("StatefulSet", NS, names.statefulset("cache")) or {}
    return str(sts["spec"]["template"]["metadata"]["annotations"][names.ANNOTATION_CONFIG_HASH])


def test_a_rotation_adds_switches_rolls_and_removes_in_that_order() -> None:
    w = World("standalone")
    acl = FakeAcl()
    w.reconciler.acl = acl
    w.step()
    w.pods_ready()
    w.step()
    w.step()
    assert w.tier["status"]["phase"] == "Ready"
    old = _secret(w, names.auth_secret("cache"), "password")
    assert old and _secret(w, names.connection_secret("cache"), "password") == old
    acl.passwords["10.0.0.1"] = {old}
    hash_before = _template_hash(w)

    tier = w.tier
    tier["metadata"]["annotations"] = {names.ANNOTATION_ROTATE_PASSWORD: "one"}
    w.kube.put(tier)
    w.step()  # started: a new password in the auth Secret, consumers still told the old
    new = _secret(w, names.auth_secret("cache"), "password")
    assert new and new != old
    assert _secret(w, names.auth_secret("cache"), names.PREVIOUS_PASSWORD_KEY) == old
    assert _secret(w, names.connection_secret("cache"), "password") == old
    auth_conf = _secret(w, names.auth_secret("cache"), names.AUTH_CONF_KEY) or ""
    assert f">{new}" in auth_conf and f">{old}" in auth_conf
    assert w.tier["status"]["auth"]["rotation"] == "InProgress"
    assert "PasswordRotationStarted" in [r for r, _ in w.events]

    w.step()  # the servers get the new password beside the old
    assert acl.passwords["10.0.0.1"] == {old, new}
    assert _secret(w, names.connection_secret("cache"), "password") == old
    w.step()  # every server has it: consumers are told, and their templates roll
    assert _secret(w, names.connection_secret("cache"), "password") == new
    assert w.tier["status"]["auth"]["stage"] == rotation.CONSUMERS
    revision = w.tier["status"]["auth"]["revision"]
    for i in range(2):
        dep = w.kube.get("Deployment", NS, f"app{i}") or {}
        annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
        assert annotations[names.ANNOTATION_AUTH_REVISION] == revision
    w.step()  # not rolled out yet: the old password stays
    assert acl.passwords["10.0.0.1"] == {old, new}
    for i in range(2):  # what the Deployment controller reports once it has rolled
        dep = w.kube.get("Deployment", NS, f"app{i}") or {}
        dep["status"] = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": 0,
            "updatedReplicas": 0,
        }
        w.kube.put(dep)
    w.step()  # rolled out: the old password is removed
    assert acl.passwords["10.0.0.1"] == {new}
    assert f">{old}" not in (_secret(w, names.auth_secret("cache"), names.AUTH_CONF_KEY) or "")
    w.step()
    auth = w.tier["status"]["auth"]
    assert auth["rotation"] == "Done" and auth["requested"] == "one"
    assert _secret(w, names.auth_secret("cache"), names.PREVIOUS_PASSWORD_KEY) is None
    assert "PasswordRotated" in [r for r, _ in w.events]
    assert _template_hash(w) == hash_before, "a rotation must restart no Redis pod"
    # Settled: another pass rotates nothing again and keeps the consumers' revision.
    acl.updates.clear()
    w.step()
    w.step()
    assert acl.updates == [] and _secret(w, names.auth_secret("cache"), "password") == new
    dep = w.kube.get("Deployment", NS, "app0") or {}
    assert (
        dep["spec"]["template"]["metadata"]["annotations"][names.ANNOTATION_AUTH_REVISION]
        == revision
    )


def test_a_tier_created_with_the_annotation_is_not_rotated_later() -> None:
    w = World("standalone")
    w.reconciler.acl = FakeAcl()
    tier = w.tier
    tier["metadata"]["annotations"] = {names.ANNOTATION_ROTATE_PASSWORD: "from-git"}
    w.kube.put(tier)
    w.step()
    w.pods_ready()
    first = _secret(w, names.auth_secret("cache"), "password")
    for _ in range(3):
        w.step()
    assert _secret(w, names.auth_secret("cache"), "password") == first
    assert _secret(w, names.auth_secret("cache"), names.PREVIOUS_PASSWORD_KEY) is None
    assert w.tier["status"]["auth"] == {"requested": "from-git"}


def test_the_annotation_on_a_tier_with_its_own_password_secret_is_ignored_with_a_warning() -> None:
    w = World("standalone")
    w.kube.put({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "theirs", "namespace": NS},
        "data": {"password": base64.b64encode(b"their-password").decode()},
    })  # fmt: skip
    tier = w.tier
    tier["spec"]["auth"] = {"passwordSecretRef": {"name": "theirs", "key": "password"}}
    w.kube.put(tier)
    w.step()
    tier = w.tier
    tier["metadata"]["annotations"] = {names.ANNOTATION_ROTATE_PASSWORD: "now"}
    w.kube.put(tier)
    w.step()
    w.step()
    assert [r for r, _ in w.events].count("PasswordRotationIgnored") == 1
    assert _secret(w, names.connection_secret("cache"), "password") == "their-password"
