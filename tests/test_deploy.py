"""`hetagent deploy`: the example plans as Ray Serve and KubeRay configuration (docs/deploy.md).

The four example workflows are planned once per module, in buy mode (the default fleet) and rent mode
(configs/fleets/rent.yaml); each plan deploys to both targets with vLLM settings, every serve.yaml
validates against Ray Serve's own schema (ray.serve.schema.ServeDeploySchema), every RayService has
the structure KubeRay reads, and every LLM pool's engine settings follow its plan entry. A CPU plan's
serve.yaml runs under `serve deploy` on a Ray head started for the test and answers a request.
"""
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from hetagent.cli import main
from hetagent.deploy import render
from hetagent.deploy.kuberay import k8s_name
from hetagent.deploy.engines import accel_of
from hetagent.runtime.app import deployment_name

from conftest import LIGHT, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["voice_agent", "rag_chat", "coding_agent", "deep_research"]
MODES = {"buy": None, "rent": str(ROOT / "configs" / "fleets" / "rent.yaml")}
K8S = {"nvidia.com/gpu", "amd.com/gpu", "habana.ai/gaudi", "gpu.intel.com/xe"}


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    from hetagent import api
    out = {}
    d = tmp_path_factory.mktemp("plans")
    for wf in EXAMPLES:
        for mode, fleet in MODES.items():
            p = api.plan(str(ROOT / "configs" / "workflows" / f"{wf}.yaml"), fleet=fleet,
                         validate=False, robustness=False).to_json()
            f = d / f"{wf}-{mode}.json"
            f.write_text(json.dumps(p))
            out[(wf, mode)] = f
    return out


def _validate_serve(cfg: dict) -> None:
    from ray.serve.schema import ServeDeploySchema
    if hasattr(ServeDeploySchema, "model_validate"):
        ServeDeploySchema.model_validate(cfg)
    else:
        ServeDeploySchema.parse_obj(cfg)


def _catalog():
    from hetagent.costmodel.devices import load_catalog
    return load_catalog()


def _check_engine(dep: dict, pool: dict, engine: str) -> None:
    u = dep["user_config"]
    assert u["engine"] == engine and u["engine_id"] == pool["engine_id"]
    if engine == "vllm":
        kw = u["llm_config"]["engine_kwargs"]
        assert kw["tensor_parallel_size"] == pool["tp"]
        assert kw["pipeline_parallel_size"] == pool["pp"]
        assert kw["max_num_seqs"] == pool["max_batch"]
        assert 0.05 <= kw["gpu_memory_utilization"] <= 0.95
        assert kw["max_model_len"] > 0
        assert kw["kv_cache_dtype"] == ("fp8" if pool["kv_precision"] == "fp8" else "auto")
        assert u["llm_config"]["model_loading_config"]["model_id"] == pool["model"]
        assert "/" in u["llm_config"]["model_loading_config"]["model_source"]   # a HF id
        assert u["llm_config"]["deployment_config"]["num_replicas"] == pool["replicas"]
        if pool["engine"] in ("prefill", "decode"):
            assert kw["kv_transfer_config"] == {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
            assert u["pd"]["role"] == pool["engine"]
        else:
            assert "kv_transfer_config" not in kw
    else:
        a = u["server_args"]
        assert (a["tp_size"], a["pp_size"], a["max_running_requests"]) == \
            (pool["tp"], pool["pp"], pool["max_batch"])
        assert a["context_length"] > 0 and 0.05 <= a["mem_fraction_static"] <= 0.95
        if pool["engine"] in ("prefill", "decode"):
            assert a["disaggregation_mode"] == pool["engine"]
            assert a["disaggregation_transfer_backend"] == "nixl"


def _check_serve(cfg: dict, raw: dict, engine: str) -> None:
    _validate_serve(cfg)
    cat = _catalog()
    pools = {deployment_name(q["id"]): q for q in raw["pools"]}
    (app,) = cfg["applications"]
    assert app["import_path"] == "hetagent.runtime.app:build_app" and app["args"]["workflow"] == 0
    names = [d["name"] for d in app["deployments"]]
    assert names[0] == "ingress" and set(names[1:]) == set(pools)
    for dep in app["deployments"][1:]:
        q = pools[dep["name"]]
        assert dep["num_replicas"] == q["replicas"]
        acc = accel_of(cat.get(q["device"]))
        opts = dep["ray_actor_options"]
        if acc.family == "cpu":
            assert opts["num_cpus"] > 0 and "num_gpus" not in opts
            continue
        assert q["device"] in opts["resources"]
        if q["model"]:
            _check_engine(dep, q, engine)


def test_examples_deploy_to_both_targets(plans, tmp_path):
    for (wf, mode), f in plans.items():
        raw = json.loads(f.read_text())
        out = tmp_path / f"{wf}-{mode}"
        for target in ("ray-serve", "kuberay"):
            assert main(["deploy", str(f), "--target", target, "-o", str(out)]) == 0, (wf, mode, target)
        serve = yaml.safe_load((out / "serve.yaml").read_text())
        _check_serve(serve, raw, "vllm")
        rs = yaml.safe_load((out / "rayservice.yaml").read_text())
        assert rs["apiVersion"] == "ray.io/v1" and rs["kind"] == "RayService"
        inner = yaml.safe_load(rs["spec"]["serveConfigV2"])
        _validate_serve(inner)
        assert inner["applications"][0]["args"]["plan"] == "/home/ray/hetagent/plan.json"
        inner["applications"][0]["args"]["plan"] = serve["applications"][0]["args"]["plan"]
        assert inner == serve                                    # the same Serve config
        cluster = rs["spec"]["rayClusterConfig"]
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        servers = raw["deployment"]["servers"]
        want = {}
        for s in servers:
            want[s["type"]] = want.get(s["type"], 0) + 1
        groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
        assert {g: v["replicas"] for g, v in groups.items()} == \
            {k8s_name(k): n for k, n in want.items()}, (wf, mode)     # aws-g4dn.xlarge -> aws-g4dn-xlarge
        for s in servers:
            g = groups[k8s_name(s["type"])]
            (c,) = g["template"]["spec"]["containers"]
            lim = c["resources"]["limits"]
            assert int(lim["cpu"]) >= 1 and lim["memory"].endswith("Gi")
            acc = set(lim) & K8S
            if s["count"] > 0:
                assert len(acc) == 1 and int(lim[acc.pop()]) == s["count"]
                assert json.loads(g["rayStartParams"]["resources"])[s["device"]] == s["count"]
            else:
                assert not acc


def test_sglang_settings_and_gaps(plans, tmp_path, capsys):
    f = plans[("voice_agent", "rent")]
    raw = json.loads(f.read_text())
    d = render(str(f), target="ray-serve", engine="sglang")
    _check_serve(yaml.safe_load(d.files["serve.yaml"]), raw, "sglang")
    # the LLMs on Gaudi 3: SGLang has no Gaudi backend -> refused, one line, nothing written
    gaudi = json.loads(plans[("voice_agent", "buy")].read_text())
    accelerators = {s["device"] for s in gaudi["deployment"]["servers"] if s["count"] > 0}
    for entry in gaudi["pools"] + gaudi["placements"]:
        if entry["device"] in accelerators:
            entry["device"] = "gaudi3"
    for s in gaudi["deployment"]["servers"]:
        if s["count"] > 0:
            s["device"], s["type"] = "gaudi3", "hls-gaudi3-8"
    gaudi["fleet"] = {("gaudi3" if d in accelerators else d): n for d, n in gaudi["fleet"].items()}
    buy = tmp_path / "gaudi.json"
    buy.write_text(json.dumps(gaudi))
    out = tmp_path / "refused"
    assert main(["deploy", str(buy), "--target", "kuberay", "--engine", "sglang", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pool 'llama-3-8b/" in err and "Gaudi" in err
    assert not out.exists()
    # --allow-gaps writes it, the gap in a comment and on stderr
    assert main(["deploy", str(buy), "--target", "ray-serve", "--engine", "sglang", "-o", str(out),
                 "--allow-gaps", "--json"]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["engine"] == "sglang" and res["pools"] > 0 and res["files"] == [str(out / "serve.yaml")]
    assert "gap: pool 'llama-3-8b/" in cap.err
    assert "# GAP: " in (out / "serve.yaml").read_text()


def test_cross_vendor_kv_is_a_gap(plans):
    raw = json.loads(plans[("rag_chat", "rent")].read_text())
    pre = next(q for q in raw["pools"] if q["engine"] == "prefill")
    for q in raw["pools"]:                     # move the prefill pool to an AMD device
        if q["id"] == pre["id"]:
            q["device"] = "mi300x"
    for pl in raw["placements"]:
        if pl.get("pool") == pre["id"]:
            pl["device"] = "mi300x"
    raw["fleet"]["mi300x"] = 1
    with pytest.raises(Exception) as e:
        render(json.dumps(raw), target="kuberay")
    assert "different vendors" in str(e.value) and pre["id"] in str(e.value)


def test_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["deploy", str(tmp_path / "missing.json"), "--target", "ray-serve", "-o", str(out)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{\"version\": 1}")
    assert main(["deploy", str(bad), "--target", "kuberay", "-o", str(out), "--json"]) == 1
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1 and not out.exists()


# ---- serve deploy on a local Ray cluster --------------------------------------------------------



def _ours(tmp: str) -> list[int]:
    """Processes whose command line names this test's Ray temp dir (the cluster it started)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if tmp.encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


@pytest.mark.ray
@pytest.mark.slow
def test_cpu_plan_runs_under_serve_deploy(tmp_path):
    pytest.importorskip("ray.serve")
    import shutil
    if not shutil.which("bwrap"):
        pytest.skip("code nodes need bubblewrap")
    from hetagent import api
    wf = tmp_path / "light.yaml"
    wf.write_text(LIGHT)
    plan = tmp_path / "light.json"
    plan.write_text(json.dumps(api.plan(str(wf), fleet="local-cpu", validate=False, robustness=False).to_json()))
    out = tmp_path / "deploy"
    assert main(["deploy", str(plan), "--target", "ray-serve", "-o", str(out)]) == 0
    cfg = yaml.safe_load((out / "serve.yaml").read_text())
    http, gcs, dash = free_port(), free_port(), free_port()
    cfg["http_options"] = {"host": "127.0.0.1", "port": http}     # a free port on loopback
    (out / "serve.yaml").write_text(yaml.safe_dump(cfg))
    tmp = str(Path("/tmp") / f"hetagent-deploy-{os.getpid()}-{http}")   # Ray's socket paths are short
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    head = subprocess.Popen(["ray", "start", "--head", "--block", f"--port={gcs}",
                             f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
                             f"--temp-dir={tmp}", "--include-dashboard=true", "--disable-usage-stats"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    addr = f"http://127.0.0.1:{dash}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{addr}/api/version", timeout=2)
                break
            except OSError:
                time.sleep(1)
        r = subprocess.run(["serve", "deploy", str(out / "serve.yaml"), "-a", addr], env=env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-800:]
        status = {}
        for _ in range(150):
            r = subprocess.run(["serve", "status", "-a", addr], env=env, capture_output=True, text=True,
                               timeout=60)
            apps = (yaml.safe_load(r.stdout) or {}).get("applications") or {}
            status = {k: v.get("status") for k, v in apps.items()}
            if status.get("light") in ("RUNNING", "DEPLOY_FAILED"):
                break
            time.sleep(2)
        assert status == {"light": "RUNNING"}, r.stdout[-2000:]
        req = urllib.request.Request(f"http://127.0.0.1:{http}/invoke",
                                     json.dumps({"text": "how are devices placed?"}).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            body = json.loads(resp.read())
        assert resp.status == 200 and body["status"] == "completed"
        assert set(body["stages"]) == {"search.lookup", "search.compute", "glue"}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)
        for pid in _ours(tmp):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
