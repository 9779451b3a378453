"""The validation metrics' latent scale: which latent dimensions count as active."""

from types import SimpleNamespace

import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec
from diled.data.toy import gaussian_ring
from diled_platform.validation import ACTIVE_DIM_THRESHOLD, active_dim_threshold, evaluate


def model_with_latents(schedule: str, scales: list[float]) -> DiLED:
    """A tiny DiLED whose encoder mean is the first data coordinate times ``scales`` per dimension."""
    torch.manual_seed(0)
    model = DiLED(VectorCodec(data_dim=2, latent_dim=len(scales), hidden=8, depth=1),
                  MLPSkipNet(len(scales), hidden=8, depth=1, time_dim=8), LatentDiffusion(schedule, 200))
    model.codec.encode = lambda batch: batch["x"][:, :1] * torch.tensor(scales)
    return model


def test_active_dims_count_the_signal_above_the_encoding_noise():
    batches = [{"x": gaussian_ring(256, seed=s)} for s in range(2)]
    var_x0 = torch.cat([b["x"][:, 0] for b in batches]).var().item()
    scales = [1.0, (0.001 / var_x0) ** 0.5, 0.0]  # Var[mu_d]: Var[x0], 0.001, 0
    # the constant schedule encodes with variance beta_1 = 0.008: only the first dimension clears it
    constant = model_with_latents("constant", scales)
    assert abs(active_dim_threshold(constant) - 0.008) < 1e-12
    assert evaluate(SimpleNamespace(module=constant), batches, seed=0)["active_dims"] == 1
    # the linear schedule's beta_1 is 1e-4: a dimension with a tenth of the constant one's noise is active
    linear = model_with_latents("linear", scales)
    assert abs(active_dim_threshold(linear) - 1e-4) < 1e-12
    assert evaluate(SimpleNamespace(module=linear), batches, seed=0)["active_dims"] == 2
    # the VAE's posterior brings its own noise: Burda et al.'s fixed threshold
    assert active_dim_threshold(SimpleNamespace(objective="vae")) == ACTIVE_DIM_THRESHOLD
