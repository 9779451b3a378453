"""Train image DiLED on Fashion-MNIST (conv encoder/decoder, latent prior) and evaluate it:
``jobs/train.py`` with the ``image-cpu`` preset.

    python jobs/train_image.py [--preset image-cpu] [--section.key=value ...]
    python jobs/train_image.py --compare two-stage     # also: autoencoder first, then the prior on it
    python jobs/train_image.py --data.source=image_folder --data.path=my_images/ --data.image_size=32

``--compare-two-stage`` is the older spelling of ``--compare two-stage``.
"""

import sys

import _path  # noqa: F401  (repository on sys.path)
import train

if __name__ == "__main__":
    sys.exit(train.main(default_preset="image-cpu", aliases={"--compare-two-stage": ["--compare", "two-stage"]}))
