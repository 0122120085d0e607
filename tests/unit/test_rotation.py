"""Password rotation (pure stages, and the whole flow through gather/decide/act with an
in-memory API and a fake ACL): the new password is added beside the old on every
server, consumers are told it and roll, the old one is removed last; nothing restarts
the Redis pods."""

from __future__ import annotations

import base64
from typing import Any

from cachetier import names
from cachetier.ports import AclUpdate, OperatorSwitch, Target
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
    """Each server's ACL users and passwords, and the operator password each one logs in
    to the others with, as ACL SETUSER/GETUSER, CONFIG SET masterauth and SENTINEL
    CONFIG SET sentinel-pass would keep them. A login with a password the server does not
    hold for the operator's user gets no answer (None)."""

    def __init__(self) -> None:
        self.passwords: dict[str, set[str]] = {}
        """host -> the application user's passwords."""
        self.operator: dict[str, set[str]] = {}
        """host -> the operator user's passwords (unset: any login is accepted)."""
        self.masterauth: dict[str, str] = {}
        self.users: dict[tuple[str, str], tuple[str, ...]] = {}
        self.updates: list[AclUpdate] = []
        self.switches: list[OperatorSwitch] = []

    def _admits(self, target: Target) -> bool:
        assert target.username == names.OPERATOR_USER
        held = self.operator.get(target.host)
        return held is None or target.password in held

    def password_hashes(self, target: Target, user: str) -> frozenset[str] | None:
        if not self._admits(target):
            return None
        held = self.passwords if user == "default" else self.operator
        assert user in ("default", names.OPERATOR_USER)
        return frozenset(password_hash(p) for p in held.get(target.host, set()))

    def update(self, update: AclUpdate) -> None:
        assert self._admits(update.target)
        self.updates.append(update)
        if update.user == names.PROBE_USER:
            self.users[(update.target.host, update.user)] = update.rules
            return
        book = self.passwords if update.user == "default" else self.operator
        held = book.setdefault(update.target.host, set())
        held |= set(update.add)
        held -= set(update.remove)

    def switched(self, target: Target, sentinel: bool) -> bool | None:
        if not self._admits(target):
            return None
        return self.masterauth.get(target.host) == target.password

    def switch(self, switch: OperatorSwitch) -> None:
        assert self._admits(switch.target)
        self.switches.append(switch)
        self.masterauth[switch.target.host] = switch.target.password or ""


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


def _op(*passwords: str, switched: bool | None = True, probe: bool = True) -> Server:
    return Server(
        "p-0", "10.0.0.1", 6379, False, None,
        operator_hashes=frozenset(password_hash(p) for p in passwords),
        switched=switched, probe_user=probe,
    )  # fmt: skip


def test_operator_stages_follow_what_the_servers_hold() -> None:
    stage = rotation.operator_stage
    assert stage(None, "cur", None, (_op("cur"),)) == ""
    assert stage("new", "old", None, None) == rotation.ADDING
    assert stage("new", "old", None, (_op("old"),)) == rotation.ADDING
    assert stage("new", "old", None, (_op("old", "new"),)) == rotation.SWITCHING
    # Once the operator logs in with the new one: every server must use it too, and
    # every probe must log in as the probe user, before the old one goes.
    assert stage(None, "new", "old", (_op("old", "new", switched=False),)) == rotation.SWITCHING
    assert stage(None, "new", "old", (_op("old", "new", switched=None),)) == rotation.SWITCHING
    assert stage(None, "new", "old", (_op("old", "new", probe=False),)) == rotation.SWITCHING
    assert stage(None, "new", "old", (_op("old", "new"),)) == rotation.REMOVING
    silent = Server("p-1", "10.0.0.2", 6379, False, None, switched=True)
    assert stage(None, "new", "old", (_op("new"), silent)) == rotation.REMOVING
    assert stage(None, "new", "old", (_op("new"),)) == rotation.DONE


def test_probes_that_log_in_as_the_operator_are_seen() -> None:
    def pod(user: str) -> dict[str, Any]:
        probe = {"exec": {"command": ["sh", "-c", f"redis-cli --user {user} ping"]}}
        return {"spec": {"containers": [{"name": "redis", "readinessProbe": probe}]}}

    assert rotation.probes_as_probe_user(pod(names.PROBE_USER))
    assert not rotation.probes_as_probe_user(pod(names.OPERATOR_USER))


def _operator_rotation_world(mode: str) -> tuple[World, FakeAcl, str]:
    w = World(mode)
    acl = FakeAcl()
    w.reconciler.acl = acl
    w.settle()
    assert w.tier["status"]["phase"] == "Ready", w.tier["status"]
    old = _secret(w, names.auth_secret("cache"), names.OPERATOR_PASSWORD_KEY)
    assert old
    sts = w.kube.get("StatefulSet", NS, names.statefulset("cache")) or {}
    for i in range(int(sts["spec"]["replicas"])):
        acl.operator[f"10.0.0.{i + 1}"] = {old}
        acl.masterauth[f"10.0.0.{i + 1}"] = old
    return w, acl, old


def test_the_operator_password_rotates_adding_switching_removing() -> None:
    w, acl, old = _operator_rotation_world("standalone")
    probe = _secret(w, names.auth_secret("cache"), names.PROBE_PASSWORD_KEY)
    assert probe, "a new tier has a probe user"
    hash_before = _template_hash(w)
    sts_before = (w.kube.get("StatefulSet", NS, names.statefulset("cache")) or {})["spec"]
    app_before = _secret(w, names.connection_secret("cache"), "password")

    tier = w.tier
    tier["metadata"]["annotations"] = {names.ANNOTATION_ROTATE_OPERATOR_PASSWORD: "q1"}
    w.kube.put(tier)
    w.step()  # started: the new one waits in next-operator-password
    new = _secret(w, names.auth_secret("cache"), names.NEXT_OPERATOR_PASSWORD_KEY)
    assert new and new != old
    assert _secret(w, names.auth_secret("cache"), names.OPERATOR_PASSWORD_KEY) == old
    auth_conf = _secret(w, names.auth_secret("cache"), names.AUTH_CONF_KEY) or ""
    assert f">{new}" in auth_conf and f">{old}" in auth_conf and f"masterauth {old}" in auth_conf
    assert w.tier["status"]["auth"]["operator"]["rotation"] == "InProgress"
    assert "OperatorPasswordRotationStarted" in [r for r, _ in w.events]

    w.step()  # added on every server
    assert acl.operator["10.0.0.1"] == {old, new}
    w.step()  # every server has it: the operator logs in with it from now on
    assert _secret(w, names.auth_secret("cache"), names.OPERATOR_PASSWORD_KEY) == new
    assert _secret(w, names.auth_secret("cache"), names.PREVIOUS_OPERATOR_PASSWORD_KEY) == old
    assert _secret(w, names.auth_secret("cache"), names.NEXT_OPERATOR_PASSWORD_KEY) is None
    assert w.tier["status"]["auth"]["operator"]["stage"] == rotation.SWITCHING
    w.step()  # the servers log in to each other with the new one
    assert acl.masterauth["10.0.0.1"] == new
    assert [s.target.password for s in acl.switches] == [new]
    w.step()  # the old one goes
    assert acl.operator["10.0.0.1"] == {new}
    auth_conf = _secret(w, names.auth_secret("cache"), names.AUTH_CONF_KEY) or ""
    assert f">{old}" not in auth_conf and f"masterauth {new}" in auth_conf
    w.step()
    status = w.tier["status"]["auth"]["operator"]
    assert status["rotation"] == "Done" and status["requested"] == "q1"
    assert _secret(w, names.auth_secret("cache"), names.PREVIOUS_OPERATOR_PASSWORD_KEY) is None
    assert "OperatorPasswordRotated" in [r for r, _ in w.events]
    # Nothing restarted, nothing else changed: the pods' template, the application's
    # password, the probe user's.
    assert _template_hash(w) == hash_before
    sts_after = (w.kube.get("StatefulSet", NS, names.statefulset("cache")) or {})["spec"]
    assert sts_after["template"] == sts_before["template"]
    assert _secret(w, names.connection_secret("cache"), "password") == app_before
    assert _secret(w, names.auth_secret("cache"), names.PROBE_PASSWORD_KEY) == probe
    # Settled, and the recovery copy has the new one.
    acl.updates.clear()
    acl.switches.clear()
    w.step()
    w.step()
    assert acl.updates == [] and acl.switches == []
    assert _secret(w, names.auth_recovery_secret("cache"), names.OPERATOR_PASSWORD_KEY) == new


def test_a_tier_from_before_the_probe_user_gets_one_and_waits_for_its_pods() -> None:
    w, acl, old = _operator_rotation_world("standalone")
    # What an older operator left: no probe user; the probes log in as the operator.
    auth = w.kube.get("Secret", NS, names.auth_secret("cache")) or {}
    del auth["data"][names.PROBE_PASSWORD_KEY]
    w.kube.put(auth)
    w.step()
    sts = w.kube.get("StatefulSet", NS, names.statefulset("cache")) or {}
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert f"--user {names.OPERATOR_USER}" in container["readinessProbe"]["exec"]["command"][2]
    pod = w.kube.get("Pod", NS, names.statefulset("cache") + "-0") or {}
    pod["spec"] = sts["spec"]["template"]["spec"]
    w.kube.put(pod)

    tier = w.tier
    tier["metadata"]["annotations"] = {names.ANNOTATION_ROTATE_OPERATOR_PASSWORD: "q1"}
    w.kube.put(tier)
    for _ in range(5):
        w.step()
    # Switched, but the old one stays: the pod's probe still logs in with it.
    assert w.tier["status"]["auth"]["operator"]["stage"] == rotation.SWITCHING
    new = _secret(w, names.auth_secret("cache"), names.OPERATOR_PASSWORD_KEY)
    assert new != old and acl.operator["10.0.0.1"] == {old, new}
    assert acl.users[("10.0.0.1", names.PROBE_USER)][:1] == ("on",)
    sts = w.kube.get("StatefulSet", NS, names.statefulset("cache")) or {}
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert f"--user {names.PROBE_USER}" in container["readinessProbe"]["exec"]["command"][2]
    pod["spec"] = sts["spec"]["template"]["spec"]  # the pod was replaced
    w.kube.put(pod)
    w.step()
    w.step()
    assert acl.operator["10.0.0.1"] == {new}
    assert w.tier["status"]["auth"]["operator"]["rotation"] == "Done"


def test_one_rotation_at_a_time() -> None:
    w, acl, old = _operator_rotation_world("standalone")
    app = _secret(w, names.auth_secret("cache"), "password")
    acl.passwords["10.0.0.1"] = {app or ""}
    tier = w.tier
    tier["metadata"]["annotations"] = {
        names.ANNOTATION_ROTATE_OPERATOR_PASSWORD: "q1",
        names.ANNOTATION_ROTATE_PASSWORD: "p1",
    }
    w.kube.put(tier)
    w.step()
    started = [r for r, _ in w.events if r.endswith("RotationStarted")]
    assert len(started) == 1, started
    for _ in range(16):
        w.step()
        for i in range(2):  # the Deployment controller rolls the consumers at once
            dep = w.kube.get("Deployment", NS, f"app{i}") or {}
            generation = dep["metadata"].get("generation", 1)
            dep["status"] = {"observedGeneration": generation, "replicas": 0, "updatedReplicas": 0}
            w.kube.put(dep)
        auth = w.tier["status"].get("auth") or {}
        if (
            auth.get("rotation") == "Done"
            and (auth.get("operator") or {}).get("rotation") == "Done"
        ):
            break
    auth = w.tier["status"]["auth"]
    assert auth["operator"]["rotation"] == "Done"
    assert auth["rotation"] == "Done", auth
    assert _secret(w, names.auth_secret("cache"), "password") != app
    assert _secret(w, names.auth_secret("cache"), names.OPERATOR_PASSWORD_KEY) != old


def test_the_old_password_stays_while_a_consumer_pod_runs_or_stops_with_it() -> None:
    dep = {
        "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "ns"},
        "spec": {"selector": {"matchLabels": {"app": "a"}}},
    }

    def pod(revision: str, **meta: Any) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "ns", "labels": {"app": "a"},
                         "annotations": {names.ANNOTATION_AUTH_REVISION: revision}, **meta},
            "status": {"phase": "Running"},
        }  # fmt: skip

    other = {"metadata": {"namespace": "ns", "labels": {"app": "b"}}, "status": {}}
    assert rotation.pods_on(dep, (pod("r"), pod("r"), other), "r")
    assert not rotation.pods_on(dep, (pod("r"), pod("q")), "r")  # an old one runs
    stopping = pod("q", deletionTimestamp="2026-12-03T12:00:00Z")
    assert not rotation.pods_on(dep, (pod("r"), stopping), "r")  # still shutting down
    done = {**pod("q"), "status": {"phase": "Succeeded"}}
    assert rotation.pods_on(dep, (pod("r"), done), "r")
    assert not rotation.pods_on(dep, None, "r")  # not listed: not known
