"""Connecting to Ray: a cluster when there is one (``RAY_ADDRESS``, as under ``ray job submit``), else an
embedded local Ray with this machine's CPUs and the dashboard on 127.0.0.1."""

from __future__ import annotations

import os


def init_ray(num_cpus: int | None = None, dashboard: bool = True, **kwargs) -> str:
    """Start or join Ray; returns ``"cluster"`` or ``"local"``."""
    import ray

    if ray.is_initialized():
        return "cluster" if os.environ.get("RAY_ADDRESS") else "local"
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)  # joins the cluster named by RAY_ADDRESS (set by `ray job submit`)
        return "cluster"
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=dashboard,
             dashboard_host="127.0.0.1", **kwargs)
    return "local"
