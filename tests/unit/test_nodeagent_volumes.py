"""Unit tests for volume contents and materialisation (ctdev.nodeagent.files, volumes)."""

from __future__ import annotations

import base64
import copy
import stat
from pathlib import Path
from typing import Any

import pytest

from ctdev.nodeagent.files import (
    DUMMY_TOKEN,
    VolumeError,
    configmap_files,
    downward_files,
    projected_files,
    secret_files,
)
from ctdev.nodeagent.volumes import PodVolumes

Obj = dict[str, Any]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


CM: Obj = {"data": {"redis.conf": "port 6379\n", "other": "x"}, "binaryData": {"bin": b64("\x00")}}
SECRET: Obj = {"data": {"password": b64("pw"), "user": b64("app")}}


def test_configmap_all_keys_and_items() -> None:
    assert configmap_files(CM, {"name": "c"}, 0o644) == {
        "redis.conf": (b"port 6379\n", 0o644),
        "other": (b"x", 0o644),
        "bin": (b"\x00", 0o644),
    }
    src = {"name": "c", "items": [{"key": "redis.conf", "path": "conf/redis.conf", "mode": 0o600}]}
    assert configmap_files(CM, src, 0o644) == {"conf/redis.conf": (b"port 6379\n", 0o600)}


def test_missing_objects_and_keys() -> None:
    with pytest.raises(VolumeError):
        configmap_files(None, {"name": "c"}, 0o644)
    assert configmap_files(None, {"name": "c", "optional": True}, 0o644) == {}
    with pytest.raises(VolumeError):
        secret_files(SECRET, {"secretName": "s", "items": [{"key": "nope", "path": "p"}]}, 0o644)
    src = {"secretName": "s", "optional": True, "items": [{"key": "nope", "path": "p"}]}
    assert secret_files(SECRET, src, 0o644) == {}
    with pytest.raises(VolumeError):
        configmap_files(CM, {"name": "c", "items": [{"key": "other", "path": "../x"}]}, 0o644)


def test_secret_default_mode() -> None:
    assert secret_files(SECRET, {"secretName": "s"}, 0o400)["password"] == (b"pw", 0o400)


POD: Obj = {
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "uid": "u",
        "labels": {"app": "x"},
        "annotations": {"cachetier.io/redis-enabled": "true", "b": "2"},
    },
    "spec": {
        "containers": [{"name": "c"}],
        "volumes": [
            {"name": "cfg", "configMap": {"name": "cm"}},
            {"name": "sec", "secret": {"secretName": "s", "defaultMode": 0o600}},
            {"name": "scratch", "emptyDir": {}},
            {
                "name": "info",
                "downwardAPI": {
                    "items": [
                        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                        {
                            "path": "flag",
                            "fieldRef": {
                                "fieldPath": "metadata.annotations['cachetier.io/redis-enabled']"
                            },
                        },
                    ]
                },
            },
            {
                "name": "api",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token"}},
                        {"configMap": {"name": "cm", "items": [{"key": "other", "path": "o"}]}},
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {"fieldPath": "metadata.namespace"},
                                    }
                                ]
                            }
                        },
                    ]
                },
            },
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "host", "hostPath": {"path": "/var/lib/thing"}},
        ],
    },
}


def test_downward_and_projected_files() -> None:
    items = POD["spec"]["volumes"][3]["downwardAPI"]["items"]
    files = downward_files(POD, items, 0o644, {})
    assert files["annotations"][0] == b'b="2"\ncachetier.io/redis-enabled="true"\n'
    assert files["flag"][0] == b"true"
    sources = POD["spec"]["volumes"][4]["projected"]["sources"]
    files = projected_files(POD, sources, 0o644, lambda n: CM, lambda n: None, {})
    assert files == {
        "token": (DUMMY_TOKEN, 0o644),
        "o": (b"x", 0o644),
        "namespace": (b"ns", 0o644),
    }


class FakeLookup:
    """Objects for PodVolumes."""

    def __init__(self, pv_path: str) -> None:
        self.cm: Obj | None = copy.deepcopy(CM)
        self.claim: Obj | None = {"spec": {"volumeName": "pv-1"}}
        self.volume: Obj = {"spec": {"hostPath": {"path": pv_path}}}

    def configmap(self, namespace: str, name: str) -> Obj | None:
        return self.cm

    def secret(self, namespace: str, name: str) -> Obj | None:
        return SECRET

    def pvc(self, namespace: str, name: str) -> Obj | None:
        return self.claim

    def pv(self, name: str) -> Obj | None:
        return self.volume


def test_pod_volumes_sync_writes_updates_and_removes(tmp_path: Path) -> None:
    lookup = FakeLookup(str(tmp_path / "pv" / "ns-data"))
    vols = PodVolumes(tmp_path / "pods" / "u", tmp_path, lookup, {})
    pod = copy.deepcopy(POD)
    vols.sync(pod)
    assert (vols.paths["cfg"] / "redis.conf").read_text() == "port 6379\n"
    assert stat.S_IMODE((vols.paths["sec"] / "password").stat().st_mode) == 0o600
    assert vols.paths["scratch"].is_dir()
    assert (vols.paths["info"] / "flag").read_text() == "true"
    assert vols.paths["data"] == tmp_path / "pv" / "ns-data" and vols.paths["data"].is_dir()
    assert vols.paths["host"] == tmp_path / "hostpath" / "var" / "lib" / "thing"
    assert (vols.paths["api"] / "token").read_bytes() == DUMMY_TOKEN

    pod["metadata"]["annotations"]["cachetier.io/redis-enabled"] = "false"
    assert lookup.cm is not None
    del lookup.cm["binaryData"]
    lookup.cm["data"]["redis.conf"] = "port 7000\n"
    vols.sync(pod)
    assert (vols.paths["info"] / "flag").read_text() == "false"
    assert (vols.paths["cfg"] / "redis.conf").read_text() == "port 7000\n"
    assert not (vols.paths["cfg"] / "bin").exists()
    assert not list(vols.paths["cfg"].glob(".*.tmp"))


def test_a_broken_reference_does_not_stop_other_volumes(tmp_path: Path) -> None:
    lookup = FakeLookup(str(tmp_path / "pv" / "ns-data"))
    vols = PodVolumes(tmp_path / "pods" / "u", tmp_path, lookup, {})
    pod = copy.deepcopy(POD)
    vols.sync(pod)
    assert lookup.cm is not None
    del lookup.cm["data"]["other"]  # the projected volume's item now points nowhere
    pod["metadata"]["annotations"]["cachetier.io/redis-enabled"] = "false"
    with pytest.raises(VolumeError, match="non-existent key: other"):
        vols.sync(pod)
    assert (vols.paths["info"] / "flag").read_text() == "false"
    assert (vols.paths["api"] / "o").read_text() == "x"  # old content kept


def test_pod_volumes_wait_for_objects(tmp_path: Path) -> None:
    lookup = FakeLookup(str(tmp_path / "pv"))
    lookup.claim = {"spec": {}}
    vols = PodVolumes(tmp_path / "pods" / "u", tmp_path, lookup, {})
    with pytest.raises(VolumeError, match="not bound"):
        vols.sync(copy.deepcopy(POD))
    lookup.claim = None
    with pytest.raises(VolumeError, match="not found"):
        vols.sync(copy.deepcopy(POD))
    lookup.cm = None
    with pytest.raises(VolumeError, match='configmap "cm" not found'):
        vols.sync(copy.deepcopy(POD))
