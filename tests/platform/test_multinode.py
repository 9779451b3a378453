"""The training job on a simulated two-node cluster (ray.cluster_utils.Cluster), one worker per node, so
that what breaks only across nodes (storage paths, placement, checkpoint merging) breaks here."""

import pytest

from diled_platform.config import load_config
from diled_platform.training.driver import fit

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "resources": {"head": 1}})
    nodes = [cluster.add_node(num_cpus=1, resources={f"node{i}": 1}) for i in range(2)]
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def test_training_across_two_nodes(two_nodes, tmp_path):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    # 0.9 CPU per worker, 1 CPU per node and none on the head: the two workers must sit on different nodes
    cfg = load_config("vector-cpu", [
        "--run.name=two-nodes", f"--run.storage_path={tmp_path}", "--run.checkpoint_every=20",
        "--optim.max_steps=40", "--data.n_train=2000", "--data.batch_size=32", "--model.prior_hidden=64",
        "--model.prior_depth=2", "--scaling.num_workers=2", "--scaling.cpus_per_worker=0.9",
        "--scaling.deepspeed=zero2"])
    out = fit(cfg)
    assert out.metrics["step"] == 40
    ckpt = out.result.checkpoint.path
    # both ranks' DeepSpeed shards landed in the one checkpoint folder
    import pathlib

    shards = sorted(p.name for p in pathlib.Path(ckpt, "deepspeed").glob("*optim_states.pt"))
    assert len(shards) == 2, shards
    assert (out.model_dir / "model.safetensors").is_file()
