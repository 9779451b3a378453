"""Train DiLED on a 2-D, 8-mode Gaussian ring with the vector codec, then sample, reconstruct and plot:
``jobs/train.py`` with the ``vector-cpu`` preset.

    python jobs/train_vectors.py [--preset vector-cpu] [--section.key=value ...]
    ray job submit --working-dir . -- python jobs/train_vectors.py
"""

import sys

import _path  # noqa: F401  (repository on sys.path)
import train

if __name__ == "__main__":
    sys.exit(train.main(default_preset="vector-cpu"))
