"""DiLED (EDDPM): diffusion with a learnable encoder and decoder (Liu et al., ICML 2024).

The model library: PyTorch only. It never imports ray or deepspeed (a test enforces it).
"""

from diled.codecs import Codec, VectorCodec, build_codec, register_codec
from diled.denoiser import PRIORS, MLPSkipNet, SlotTransformer, build_prior
from diled.diffusion import LatentDiffusion, ddim_invert, ddim_sample, ddpm_sample
from diled.guidance import CFGPrior, ClassifierGuidedPrior, LatentClassifier
from diled.model import DiLED
from diled.prior_space import PriorSpace
from diled.schedules import SCHEDULE_NAMES, get_betas

from diled import baselines  # noqa: E402,F401 -- registers the VAE's objective for DiLED.from_config

__version__ = "0.1.0"

__all__ = [
    "DiLED", "LatentDiffusion", "MLPSkipNet", "SlotTransformer", "PRIORS", "build_prior", "Codec", "VectorCodec", "build_codec", "register_codec",
    "ddim_sample", "ddpm_sample", "ddim_invert", "get_betas", "SCHEDULE_NAMES",
    "CFGPrior", "ClassifierGuidedPrior", "LatentClassifier", "PriorSpace",
]
