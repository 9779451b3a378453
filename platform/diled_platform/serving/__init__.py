"""Serving: the Ray Serve application (``app``: the FastAPI ingress, the deployment and its deploy helpers),
its request schema (``schema``), dynamic batching (``batching``) and an HTTP client (``client``). Serve
config files name it as ``diled_platform.serve:app_builder``."""
