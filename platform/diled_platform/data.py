"""Input pipelines as Ray Data datasets: one column of examples (``"x"``), split into train/validation.

Ray Train shards the training set over the workers (``ray.train.get_dataset_shard("train")``), so the
input scales with the cluster; the small validation set goes whole to every worker, which evaluates its
own strided part of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import ray.data

from diled_platform.config import ConfigError, DataConfig


def _ring_table(cfg: DataConfig):
    from diled.data.toy import gaussian_ring

    x = gaussian_ring(cfg.n_train, seed=cfg.seed).numpy().astype(np.float32)
    return ray.data.from_numpy(x).rename_columns({"data": "x"})


def _files(cfg: DataConfig) -> ray.data.Dataset:
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise ConfigError(f"data.path: {path} does not exist")
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    suffixes = {p.suffix for p in files if p.is_file()}
    if suffixes <= {".parquet"} and suffixes:
        return ray.data.read_parquet(str(path))
    if suffixes <= {".arrow", ".feather"} and suffixes:
        import pyarrow.feather as feather

        return ray.data.from_arrow([feather.read_table(str(p)) for p in files if p.is_file()])
    raise ConfigError(f"data.path: {path} holds no .parquet or .arrow/.feather files (found {sorted(suffixes)})")


def _hf_disk(cfg: DataConfig) -> ray.data.Dataset:
    import datasets

    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise ConfigError(f"data.path: {path} does not exist")
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise ConfigError(f"data.path: {path} is a DatasetDict without a 'train' split ({list(ds)})")
        ds = ds["train"]
    return ray.data.from_arrow(ds.data.table)


def text_splits(cfg: DataConfig):
    """The text sources as seeded train / val / test Arrow tables (columns text, label, source), and the
    cleaning statistics. Deterministic: the driver and the final evaluation get the same split."""
    from diled.data.text import default_corpus, read_user_texts, split_table

    if cfg.source == "text_corpus":
        table, stats = default_corpus(cfg.min_words, cfg.max_words)
    elif cfg.source == "text_files":
        column = cfg.column if cfg.column != "x" else "text"
        try:
            table, stats = read_user_texts(cfg.path, column=column, label_column=cfg.label_column,
                                           min_words=cfg.min_words, max_words=cfg.max_words)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"data.path: {e}") from None
    else:
        raise ConfigError(f"data.source {cfg.source!r} is not a text source")
    if table.num_rows == 0:
        raise ConfigError(f"no usable text in {cfg.path or cfg.source} ({stats.summary()})")
    splits = split_table(table, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if cfg.max_examples:
        splits["train"] = splits["train"].slice(0, cfg.max_examples)
    return splits, stats


def protein_splits(cfg: DataConfig):
    """The protein sources as train / val / test Arrow tables (columns sequence, fitness): GB1 in its own
    split, a user's file in a seeded random one."""
    from diled.data.protein import read_gb1, read_protein_file, split_protein_table

    try:
        if cfg.source == "gb1":
            splits = read_gb1(cfg.path, max_train=cfg.max_examples, seed=cfg.seed)
        elif cfg.source == "protein_files":
            column = cfg.column if cfg.column != "x" else "sequence"
            table = read_protein_file(cfg.path, sequence_column=column, fitness_column=cfg.fitness_column)
            splits = split_protein_table(table, cfg.val_fraction, cfg.test_fraction, cfg.seed)
            if cfg.max_examples:
                splits["train"] = splits["train"].slice(0, cfg.max_examples)
        else:
            raise ConfigError(f"data.source {cfg.source!r} is not a protein source")
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data: {e}") from None
    return splits


def image_splits(cfg: DataConfig) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The image sources as ``{split: (uint8 images, labels or None)}``: Fashion-MNIST's 60k training
    images split into train/val (seeded), its 10k test set as test; a user's folder split at random."""
    from diled.data.image import fashion_mnist, read_image_folder

    try:
        if cfg.source == "fashion_mnist":
            x, y = fashion_mnist("train", cfg.path)
            test = fashion_mnist("test", cfg.path)
        elif cfg.source == "image_folder":
            x, _ = read_image_folder(cfg.path, cfg.image_size, cfg.image_channels)
            y, test = None, None
        else:
            raise ConfigError(f"data.source {cfg.source!r} is not an image source")
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data: {e}") from None
    order = np.random.default_rng(cfg.seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * cfg.val_fraction)))
    n_test = 0 if test is not None else int(round(len(x) * cfg.test_fraction))
    if len(x) - n_val - n_test < 1:
        raise ConfigError(f"data: {len(x)} images are too few for the validation/test fractions")
    pick = lambda idx: (x[np.sort(idx)], None if y is None else y[np.sort(idx)])  # noqa: E731
    splits = {"val": pick(order[:n_val]), "train": pick(order[n_val + n_test:])}
    splits["test"] = test if test is not None else pick(order[n_val:n_val + n_test])
    if cfg.max_examples:
        splits["train"] = tuple(None if a is None else a[:cfg.max_examples] for a in splits["train"])
    return splits


def build_datasets(cfg: DataConfig) -> dict[str, ray.data.Dataset]:
    """``{"train": ..., "val": ...}`` Ray datasets: the examples in column ``"x"`` (protein sources:
    columns ``sequence`` and ``fitness``)."""
    if cfg.source in ("fashion_mnist", "image_folder"):
        splits = image_splits(cfg)
        # materialised here: a lazy rename would run as a Ray Data task inside the training workers, and
        # with the workers holding the CPUs that task never gets scheduled
        return {name: ray.data.from_numpy(splits[name][0].reshape(len(splits[name][0]), -1))
                .rename_columns({"data": "x"}).materialize() for name in ("train", "val")}
    if cfg.source in ("gb1", "protein_files"):
        splits = protein_splits(cfg)
        return {name: ray.data.from_arrow(splits[name].select(["sequence", "fitness"])) for name in ("train", "val")}
    if cfg.source in ("text_corpus", "text_files"):
        splits, _ = text_splits(cfg)
        return {name: ray.data.from_arrow(splits[name].select(["text"]).rename_columns(["x"]))
                for name in ("train", "val")}
    if cfg.source == "ring":
        ds = _ring_table(cfg)
    elif cfg.source == "files":
        ds = _files(cfg)
    else:
        ds = _hf_disk(cfg)
    columns = ds.columns()
    if cfg.column not in columns:
        raise ConfigError(f"data.column: no column {cfg.column!r} in {cfg.path or cfg.source}; columns: {columns}")
    if cfg.column != "x":
        ds = ds.select_columns([cfg.column]).rename_columns({cfg.column: "x"})
    else:
        ds = ds.select_columns(["x"])
    train, val = ds.train_test_split(test_size=cfg.val_fraction, shuffle=True, seed=cfg.seed)
    return {"train": train, "val": val}
