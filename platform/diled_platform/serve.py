"""The Serve application's public import path, ``diled_platform.serve:app_builder``, which Serve config
files name (``platform/serve_config.yaml``, ``cluster/kuberay/rayservice.yaml``). The application lives in
``diled_platform.serving``; this module re-exports what deployments and users call."""

from diled_platform.serving.app import DiLEDService
from diled_platform.serving.deploy import (DEFAULT_CONFIG, app_builder, build_app, deploy, direct_ingress_env, direct_urls,
                                           serve_config, swap_model, update_in_place)
from diled_platform.serving.http import app

__all__ = ["DEFAULT_CONFIG", "DiLEDService", "app", "app_builder", "build_app", "deploy", "direct_ingress_env",
           "direct_urls", "serve_config", "swap_model", "update_in_place"]
