"""plan.json -> a KubeRay RayService (apiVersion ray.io/v1).

`spec.serveConfigV2` is the Serve config of the ray-serve target (hetagent.deploy.serve_config) as a
YAML string, its applications reading the plan from a ConfigMap mounted in every pod
(`PLAN_MOUNT`). `spec.rayClusterConfig` has a head group (no work scheduled on it: `num-cpus: 0`) and
one worker group per server type of plan.json's `deployment.servers` (`replicas` = servers of that
type): each container requests the type's accelerators by their Kubernetes resource name and the host
cores and memory of the type, and its `rayStartParams` advertise the device id as a Ray resource (and
`HPU` for Gaudi), which the Serve config's `ray_actor_options` request.
"""
from __future__ import annotations

import json
import math
import re

from hetagent.deploy.engines import accel_of

PLAN_DIR = "/home/ray/hetagent"
PLAN_MOUNT = f"{PLAN_DIR}/plan.json"
RAY_VERSION = "2.60.0"
IMAGES = {"nvidia": f"rayproject/ray-llm:{RAY_VERSION}-py311-cu128",
          "amd": f"rayproject/ray:{RAY_VERSION}-py311",
          "gaudi": f"rayproject/ray:{RAY_VERSION}-py311",
          "cpu": f"rayproject/ray:{RAY_VERSION}-py311"}
HEAD = {"cores": 4, "memory_gb": 16}


def k8s_name(text: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (s or "x")[:50].rstrip("-")


def server_groups(raw: dict, catalog: dict) -> list[dict]:
    """One entry per server type: {type, device, count (accelerators per server), servers, cores,
    memory_gb, accel}. Host figures from `host` of the deployment's servers; where the plan has none
    (0), a CPU-only server's sockets' cores and memory from the catalog, an accelerator server's the
    cores its CPU pools keep busy plus one per accelerator and the memory its devices hold."""
    groups: dict = {}
    for s in (raw.get("deployment") or {}).get("servers") or []:
        t = s.get("type") or s.get("device")
        g = groups.setdefault(t, {"type": t, "device": s.get("device"), "count": int(s.get("count") or 0),
                                  "servers": 0, "cores": 0.0, "memory_gb": 0.0})
        g["servers"] += 1
        host = s.get("host") or {}
        cores, mem = float(host.get("cores") or 0), float(host.get("memory_gb") or 0)
        dev = catalog.get(s.get("device"))
        if cores <= 0 or mem <= 0:
            devs = s.get("devices") or []
            if dev is not None and dev.kind == "cpu":
                c = dev.cores or 8
                cores = cores or float(c) * max(1, len(devs))
                mem = mem or float(dev.memory_gb or 64) * max(1, len(devs))
            else:
                busy = sum(float(r.get("cores") or 0) for d in devs for r in d.get("replicas") or [])
                cores = cores or math.ceil(busy) + max(1, g["count"])
                mem = mem or max(16.0, sum(float(d.get("memory_gb") or 0) for d in devs))
        g["cores"], g["memory_gb"] = max(g["cores"], cores), max(g["memory_gb"], mem)
    out = []
    for g in groups.values():
        g["accel"] = accel_of(catalog.get(g["device"]))
        out.append(g)
    return out


def _container(name: str, image: str, cores: float, mem_gb: float, extra: dict | None = None) -> dict:
    res = {"cpu": str(int(math.ceil(cores))), "memory": f"{int(math.ceil(mem_gb))}Gi", **(extra or {})}
    return {"name": name, "image": image, "resources": {"requests": dict(res), "limits": dict(res)},
            "volumeMounts": [{"name": "hetagent-plan", "mountPath": PLAN_DIR, "readOnly": True}]}


def _pod(container: dict, configmap: str) -> dict:
    return {"spec": {"containers": [container],
                     "volumes": [{"name": "hetagent-plan", "configMap": {"name": configmap}}]}}


def rayservice(name: str, serve_text: str, raw: dict, catalog: dict) -> dict:
    name = k8s_name(name)
    configmap = f"{name}-plan"
    head = _container("ray-head", IMAGES["cpu"], HEAD["cores"], HEAD["memory_gb"])
    head["ports"] = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                     {"containerPort": 10001, "name": "client"}, {"containerPort": 8000, "name": "serve"}]
    workers = []
    for g in server_groups(raw, catalog):
        acc = g["accel"]
        extra, resources = {}, {}
        if g["count"] > 0 and acc.k8s:
            extra[acc.k8s] = str(g["count"])
            resources[g["device"]] = g["count"]
            if acc.family == "gaudi":
                resources["HPU"] = g["count"]
        else:
            sockets = max(1, len([d for s in raw["deployment"]["servers"] if (s.get("type") or s.get("device")) == g["type"]
                                  for d in s.get("devices") or []]) // max(1, g["servers"]))
            resources[g["device"]] = sockets
        params = {"resources": json.dumps(resources, sort_keys=True)}
        if acc.ray_gpu and g["count"] > 0 and acc.family != "nvidia":
            params["num-gpus"] = str(g["count"])      # KubeRay reads nvidia.com/gpu itself
        image = IMAGES.get(acc.family, IMAGES["cpu"])
        workers.append({"groupName": k8s_name(g["type"]), "replicas": g["servers"],
                        "minReplicas": g["servers"], "maxReplicas": g["servers"],
                        "rayStartParams": params,
                        "template": _pod(_container("ray-worker", image, g["cores"], g["memory_gb"], extra),
                                         configmap)})
    return {"apiVersion": "ray.io/v1", "kind": "RayService",
            "metadata": {"name": name, "annotations": {"hetagent.io/plan-configmap": configmap}},
            "spec": {"serveConfigV2": serve_text,
                     "rayClusterConfig": {"rayVersion": RAY_VERSION,
                                          "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0",
                                                                               "num-cpus": "0"},
                                                            "template": _pod(head, configmap)},
                                          "workerGroupSpecs": workers}}}
