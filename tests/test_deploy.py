"""The Kubernetes manifests: valid against the Kubernetes schemas (offline, from the
kubernetes-validate package), and coherent with zstream: shard from the pod index, topology
from the ConfigMap without a password in it, /dev/shm large enough, probes that are commands."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO
from zstream.cli import main
from zstream.envrefs import REFERENCE, references
from zstream.preflight import shared_memory_needed
from zstream.shard import parse_shard
from zstream.topology import Topology

KUBE = REPO / "deploy" / "kubernetes"
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())  # 1.28: the first with the pod-index label


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[str, dict[str, Any]]:
    """Every resource the kustomization applies, by kind, plus the example Secrets."""
    kustomization = documents(KUBE / "kustomization.yaml")[0]
    found: dict[str, dict[str, Any]] = {}
    for name in [*kustomization["resources"], "secrets.example.yaml"]:
        for doc in documents(KUBE / name):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def container(found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return found["StatefulSet/zstream"]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    found = resources()
    assert {"ConfigMap/zstream-topology", "Service/zstream", "StatefulSet/zstream"} <= set(found)
    for name, doc in found.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} against Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_an_invalid_manifest_is_caught() -> None:
    wrong_type, misspelt = resources(), resources()
    wrong_type["StatefulSet/zstream"]["spec"]["replicas"] = "three"
    container(misspelt)["livenessprobe"] = {}
    for broken in (wrong_type, misspelt):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken["StatefulSet/zstream"], VERSIONS[-1], strict=True)


def topology(found: dict[str, dict[str, Any]]) -> Topology:
    raw = tomllib.loads(found["ConfigMap/zstream-topology"]["data"]["topology.toml"])
    return Topology.model_validate(raw)


def test_each_pod_takes_its_shard_from_its_index() -> None:
    found = resources()
    env = {item["name"]: item for item in container(found)["env"]}
    field = env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.labels['apps.kubernetes.io/pod-index']"
    replicas = found["StatefulSet/zstream"]["spec"]["replicas"]
    for index in range(replicas):  # what $(POD_INDEX) expands to in each pod
        shard = parse_shard(env["ZSTREAM_SHARD"]["value"].replace("$(POD_INDEX)", str(index)))
        assert (shard.index, shard.count) == (index, replicas)


def test_passwords_come_from_the_secret_never_the_configmap() -> None:
    found = resources()
    settings = topology(found)
    urls = [settings.redis.url, *(camera.url for camera in settings.cameras)]
    for url in urls:
        password = urlsplit(url).password
        assert password is None or REFERENCE.fullmatch(password), f"a literal password in {url}"
    secret_keys = set(found["Secret/zstream-credentials"]["stringData"])
    assert {name for url in urls for name in references(url)} == secret_keys
    env_from = [source["secretRef"]["name"] for source in container(found)["envFrom"]]
    assert env_from == ["zstream-credentials"]


def test_shm_is_a_memory_backed_volume_large_enough() -> None:
    found = resources()
    volumes = {v["name"]: v for v in found["StatefulSet/zstream"]["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(found)["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    size_mib = int(shm["sizeLimit"].removesuffix("Mi"))
    assert shared_memory_needed(topology(found)) / 2**20 < size_mib  # the whole fleet fits one pod


def test_probes_are_zstream_commands_and_metrics_are_scraped() -> None:
    found = resources()
    spec = container(found)
    for probe in ("livenessProbe", "readinessProbe"):
        command = spec[probe]["exec"]["command"]
        assert command[0] == "zstream"
        with pytest.raises(SystemExit) as exited:  # the arguments parse (--help stops there)
            main([*command[1:], "--help"])
        assert exited.value.code == 0
    annotations = found["StatefulSet/zstream"]["spec"]["template"]["metadata"]["annotations"]
    port = int(annotations["prometheus.io/port"])
    assert spec["ports"][0]["containerPort"] == port
    assert topology(found).metrics.address == f"0.0.0.0:{port}"
    assert topology(found).security.metrics_token_file.startswith(
        next(m["mountPath"] for m in spec["volumeMounts"] if m["name"] == "metrics-token")
    )
    monitor = documents(KUBE / "prometheus" / "podmonitor.yaml")[0]
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert (
        endpoint["port"] == "metrics"
        and endpoint["authorization"]["credentials"]["name"]
        == (found["StatefulSet/zstream"]["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"])
    )
