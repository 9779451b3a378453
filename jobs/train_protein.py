"""Train protein DiLED on GB1 (transformer encoder, fitness head, latent prior) and evaluate it:
``jobs/train.py`` with the ``protein-cpu`` preset.

    python jobs/train_protein.py [--preset protein-cpu] [--section.key=value ...]
    python jobs/train_protein.py --compare autoencoder     # also the prior switched off, same budget
    python jobs/train_protein.py --data.source=protein_files --data.path=my_variants.csv

``--compare-autoencoder`` is the older spelling of ``--compare autoencoder``.
"""

import sys

import _path  # noqa: F401  (repository on sys.path)
import train

if __name__ == "__main__":
    sys.exit(train.main(default_preset="protein-cpu", aliases={"--compare-autoencoder": ["--compare", "autoencoder"]}))
