"""A real, small DiLED training run learns a multimodal 2-D distribution.

Data: an 8-mode Gaussian ring (radius 2, std 0.1), 4000 training points, 1000 held-out points, seed 0.
Model: VectorCodec (2-d data, 2-d latent) + MLPSkipNet 4 x 256, constant schedule, T = 1000, w = 1,
3000 AdamW steps of batch 128 (about 15 s on 2 cores). Distance: sliced 1-Wasserstein over 256 random
directions (diled.metrics.sliced_wasserstein), 1000 DDIM(50) samples against the held-out points.
Measured when written: untrained 4.2, trained 0.13, two independent data samples 0.05.
"""

import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet, VectorCodec
from diled.data.toy import gaussian_ring, ring_mode_coverage
from diled.metrics import mmd_rbf, sliced_wasserstein
from diled.training import infinite_batches, train


def test_diled_learns_a_gaussian_ring():
    torch.manual_seed(0)
    model = DiLED(VectorCodec(2, 2, hidden=64, sigma=0.1), MLPSkipNet(2, hidden=256, depth=4, time_dim=32),
                  LatentDiffusion("constant", 1000), w=1.0)
    x_train, x_test = gaussian_ring(4000, seed=0), gaussian_ring(1000, seed=1)

    def evaluate():
        samples = torch.tensor(model.generate(1000, steps=50, seed=123))
        recon = torch.tensor(model.reconstruct({"x": x_test}))
        return (sliced_wasserstein(samples, x_test), mmd_rbf(samples, x_test),
                (recon - x_test).pow(2).sum(-1).mean().item(), samples)

    sw0, mmd0, mse0, _ = evaluate()
    history = train(model, infinite_batches(x_train, 128, seed=0), steps=3000, lr=2e-3, log_every=1000)
    sw1, mmd1, mse1, samples = evaluate()
    mean_predictor_mse = (x_test - x_train.mean(0)).pow(2).sum(-1).mean().item()  # ~4.0 (radius^2)

    assert history[-1]["loss"] < history[0]["loss"]
    # generation: at least 10x closer to the data than the untrained model, and close in absolute terms
    assert sw1 < 0.1 * sw0 and sw1 < 0.3, (sw0, sw1)
    assert mmd1 < 0.2 * mmd0, (mmd0, mmd1)
    modes, frac = ring_mode_coverage(samples)
    assert modes == 8 and frac > 0.4, (modes, frac)  # all modes, no collapse onto a few
    # reconstruction: far better than predicting the training mean
    assert mse1 < 0.05 * mean_predictor_mse, (mse1, mean_predictor_mse)
    assert mse1 < mse0
