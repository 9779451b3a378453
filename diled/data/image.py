"""Images: Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (idx files, read by path),
and a user's folder of images. Arrays are uint8 ``[N x H x W]`` (grey) or ``[N x H x W x 3]`` (colour)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (optionally .gz): the magic number gives the type and the number of dimensions."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an idx file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(raw[2])
    if dtype is None:
        raise ValueError(f"{path}: unknown idx data type {raw[2]:#x}")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, the file holds {data.size} values")
    return data.reshape(shape)


def fashion_mnist(split: str = "train", directory: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N x 28 x 28], labels int64 [N]) of Fashion-MNIST's ``train`` (60k) or ``test`` (10k)."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = Path(directory or FASHION_MNIST_DIR)
    paths = []
    for stem in _FILES[split]:
        candidates = [directory / f"{stem}.gz", directory / stem]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"Fashion-MNIST {split}: no {stem}[.gz] in {directory} (install the Debian "
                                    f"package dataset-fashion-mnist; scripts/setup.sh does)")
        paths.append(found)
    images, labels = read_idx(paths[0]), read_idx(paths[1]).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def read_image_folder(directory: str | Path, size: int, channels: int = 1) -> tuple[np.ndarray, list[str]]:
    """Every image under ``directory`` as uint8 ``[N x size x size]`` (grey) or ``[N x size x size x 3]``,
    resized; returns the images and their paths. Unreadable files are an error that names them."""
    from PIL import Image, UnidentifiedImageError

    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"no such folder: {directory}")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{directory}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    out = []
    for path in files:
        try:
            with Image.open(path) as im:
                im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
                out.append(np.asarray(im, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: cannot read the image ({e})") from None
    return np.stack(out), [str(p) for p in files]
