"""Cluster deployment: cluster.yaml and the KubeRay manifest against their schemas, `distclust submit`
against a real Ray job server, and a training run whose workers spread over a 2-node cluster."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap

import jsonschema
import pytest
import yaml

from conftest import ROOT


def test_cluster_yaml_validates_against_rays_autoscaler_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(cfg))
    gpu_types = [n for n, t in cfg["available_node_types"].items() if t["resources"].get("GPU")]
    assert gpu_types and cfg["available_node_types"][cfg["head_node_type"]]["resources"].get("GPU") is None
    assert any("install-gpu.sh" in c for c in cfg["setup_commands"])   # one faiss, with GPU support
    bad = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    bad["available_node_types"]["worker.a10g"]["min_workerz"] = 1  # a typo is caught by the schema
    with pytest.raises(Exception, match="min_workerz"):
        validate_config(prepare_config(bad))


def test_kuberay_rayjob_validates_and_runs_a_real_spec():
    schema = json.loads((ROOT / "tests" / "schemas" / "rayjob-v1.schema.json").read_text())
    doc = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    jsonschema.validate(doc, schema)
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:4] == ["python", "-m", "distclust.cli", "train"]
    from distclust.spec import load_spec

    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert load_spec(ROOT / argv[4], sets).scaling.use_gpu  # the spec and its overrides are valid
    doc["spec"]["shutdownAfterJobFinishes"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


TWO_NODES = textwrap.dedent("""
    import json, sys
    import distclust
    from ray.cluster_utils import Cluster
    from distclust.engine.trainer import run_training
    from distclust.spec import load_spec
    sys.path.insert(0, "tests")
    from conftest import tiny_spec

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3})
    cluster.add_node(num_cpus=3)  # 2 CPUs per worker: one worker fits on each node, 1 CPU left for reads
    cluster.wait_for_nodes()
    raw = tiny_spec()
    raw["scaling"].update(num_workers=2, cpus_per_worker=2, address=cluster.address,
                          storage_path=sys.argv[2] + "/shared")
    res = run_training(load_spec(raw), sys.argv[2] + "/run", data=sys.argv[1])
    cfg = json.load(open(res.model_dir / "config.json"))
    print("NODES", json.dumps([w["node_id"] for w in cfg["workers"]]))
    print("ACC", res.metrics.get("acc"), flush=True)
    import ray
    ray.shutdown()
    cluster.shutdown()
""")


@pytest.mark.slow   # minutes of CPU: a second Ray node (CI runs -m 'not slow')
def test_training_spreads_over_two_nodes_with_shared_storage(blobs_dataset, tmp_path):
    r = subprocess.run([sys.executable, "-c", TWO_NODES, str(blobs_dataset), str(tmp_path)], capture_output=True,
                       text=True, timeout=900, cwd=ROOT, env={**__import__("os").environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-4000:]
    nodes = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("NODES"))[6:])
    assert len(nodes) == 2 and len(set(nodes)) == 2, nodes  # one worker per node
    acc = float(next(l for l in r.stdout.splitlines() if l.startswith("ACC")).split()[1])
    assert acc > 0.9
    assert list((tmp_path / "shared").glob("distclust-*/checkpoint_*"))  # checkpoints on the shared storage path
