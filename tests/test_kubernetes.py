"""The Kubernetes manifests in configs/kubernetes/ (docs/scaling.md): they parse, the
config they carry is a valid ringserve config, and the probes, ports, /dev/shm volume
and grace period agree with it and with the example config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from ringserve.runtime import config

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "configs" / "kubernetes"
EXAMPLE = ROOT / "configs" / "ringserve.toml"
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "": 1}


def docs() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert {"apiVersion", "kind", "metadata"} <= set(doc), (path, doc)
                out[doc["kind"]] = doc
    return out


def port(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def quantity(q: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|)", q)
    assert m, q
    return int(m.group(1)) * UNITS[m.group(2)]


def test_manifests_agree_with_the_config_they_carry(tmp_path: Path) -> None:
    d = docs()
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= set(d)
    raw = tomllib.loads(d["ConfigMap"]["data"]["ringserve.toml"])
    for m in raw["models"]:
        m["base_path"] = str(tmp_path)  # the models volume exists only in the pod
    listeners = {"msgpack": "tcp", "http": "http", "metrics": "metrics"}
    http_port = port(raw["server"]["http"])
    if "http" not in config.ServerConfig.__dataclass_fields__:
        del raw["server"]["http"]  # the REST listener arrives with the HTTP layer
    cfg = config.parse(raw, "configmap ringserve.toml").server
    example = tomllib.loads(EXAMPLE.read_text())["server"]
    # The same ports as the example config, on every interface of the pod.
    ports = {n: port(getattr(cfg, k, f":{http_port}")) for n, k in listeners.items()}
    for name, key in listeners.items():
        if key in example:
            assert ports[name] == port(example[key]), name
    assert all(getattr(cfg, k, "0.0.0.0:").startswith("0.0.0.0:") for k in listeners.values())

    pod = d["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == ports
    ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/readyz", ports["metrics"])
    assert (live["path"], live["port"]) == ("/healthz", ports["metrics"])
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"

    # The kubelet's SIGKILL comes after the server's own stop.
    assert cfg.drain_delay_seconds > 0
    assert pod["terminationGracePeriodSeconds"] > cfg.drain_delay_seconds + cfg.grace_seconds

    # /dev/shm: memory-backed, room for every ring twice (a version change).
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    shm = vols[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    workers = sum(m.get("instances", {}).get("count", 1) for m in raw["models"])
    rings = workers * 2 * (cfg.ring_bytes + 4096)
    assert quantity(shm["sizeLimit"]) >= 2 * rings
    assert quantity(c["resources"]["limits"]["memory"]) > quantity(shm["sizeLimit"])

    # The config file the server is started with is the ConfigMap's.
    cfg_path = Path(c["args"][c["args"].index("--config") + 1])
    assert vols[mounts[str(cfg_path.parent)]]["configMap"]["name"] == "ringserve"
    assert cfg_path.name in d["ConfigMap"]["data"]

    # The Service reaches the same named ports.
    svc = {p["name"]: p for p in d["Service"]["spec"]["ports"]}
    assert {n: p["port"] for n, p in svc.items()} == ports
    assert all(p["targetPort"] == n for n, p in svc.items())
    labels = d["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert d["Service"]["spec"]["selector"].items() <= labels.items()
