import pytest


@pytest.fixture(scope="module")
def ray_local():
    """An in-process local Ray on 2 CPUs for one test module (shut down after it, so that modules that
    start their own cluster, or a head node, find none running)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20)
    yield ray
    ray.shutdown()
