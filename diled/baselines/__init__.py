"""What DiLED is compared with, on the same codecs (docs/design.md section 2): the VAE as its own class
(``VAE``, a ``DiLED`` subclass chosen by ``"objective": "vae"`` in a config), and two-stage latent
diffusion as two DiLED objectives (``"autoencoder"`` then ``"prior_only"``), so every baseline trains
through the same trainer, data and budget."""

from diled.baselines.vae import VAE, VAEOptions, gaussian_kl, kl_weight

__all__ = ["VAE", "VAEOptions", "gaussian_kl", "kl_weight"]
