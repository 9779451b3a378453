"""A codec defined outside the platform, for ``test_new_datatype.py``: short sampled waves ``x0``
[N x length], an MLP encoder to ``mu`` and an MLP decoder back, Gaussian likelihood with a fixed scale.
A config names it by import path, ``model.codec: "sine_codec:SineCodec"`` (this folder on PYTHONPATH)."""

import math

import numpy as np
import torch
from torch import nn

from diled.codecs import Codec


class SineCodec(Codec):
    name = "sine"
    input_kind = "arrays"       # Serve and the CLI take lists of ``data_dim`` numbers

    def __init__(self, latent_dim: int, length: int = 16, hidden: int = 64, sigma: float = 0.1):
        super().__init__()
        self.latent_dim, self.data_dim, self.hidden, self.sigma = latent_dim, length, hidden, sigma
        self.encoder = nn.Sequential(nn.Linear(length, hidden), nn.SiLU(), nn.Linear(hidden, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, length))

    def get_config(self):
        return {"latent_dim": self.latent_dim, "length": self.data_dim, "hidden": self.hidden, "sigma": self.sigma}

    def encode(self, batch):
        return self.encoder(batch["x"])

    def reconstruction_loss(self, batch, z):
        sq = (batch["x"] - self.decoder(z)).pow(2).sum(-1)
        return sq / (2 * self.sigma ** 2) + self.data_dim * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))

    def decode(self, z, **kwargs):
        return self.decoder(z).tolist()

    def collate(self, examples):
        x = torch.as_tensor(np.asarray(examples, dtype=np.float32))
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"SineCodec expects waves of {self.data_dim} samples, got shape {tuple(x.shape)}")
        return {"x": x}

    def collate_columns(self, columns):
        return self.collate(np.stack(list(columns["x"])))
