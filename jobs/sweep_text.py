"""Sweep text DiLED's w, noise schedule, T and learning rate: ``jobs/sweep.py`` with the ``text-cpu`` sweep.

    python jobs/sweep_text.py [--num-samples 12] [--name my-sweep]
"""

import sys

import _path  # noqa: F401  (repository on sys.path)
import sweep

if __name__ == "__main__":
    sys.exit(sweep.main(default_sweep="text-cpu"))
