"""What DiLED is compared with, on the same codecs (DESIGN.md section 2). The baselines are objectives
of ``DiLED`` selected by config (``objective="vae"``; two-stage = ``"autoencoder"`` then ``"prior_only"``),
so they train through the same trainer, data and budget; this package holds the VAE's parts."""

from diled.baselines.vae import VAEOptions, gaussian_kl, kl_weight

__all__ = ["VAEOptions", "gaussian_kl", "kl_weight"]
