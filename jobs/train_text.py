"""Train text DiLED (BERT-family encoder, causal decoder, latent diffusion prior) and evaluate it: the
README's main job, ``jobs/train.py`` with the ``text-cpu`` preset.

    python jobs/train_text.py [--preset text-cpu] [--section.key=value ...]
    ray job submit --working-dir . -- python jobs/train_text.py

Writes to ``<run.storage_path>/<run.name>/``: the model, samples.txt, reconstructions.tsv,
reconstructions_second_test.tsv (Guardian headlines), interpolations.txt, arithmetic.tsv, eval.json,
metrics.json and plots.
"""

import sys

import _path  # noqa: F401  (repository on sys.path)
import train

if __name__ == "__main__":
    sys.exit(train.main(default_preset="text-cpu"))
