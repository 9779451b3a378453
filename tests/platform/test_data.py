"""The vector data type's input through Ray Data from parquet, Arrow and saved `datasets` folders."""

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from diled import VectorCodec
from diled_platform.config import ConfigError
from diled_platform.datatypes.vector import VectorData, VectorOptions

pytestmark = pytest.mark.timeout(300)


def vectors_table(n=200):
    rng = np.random.default_rng(0)
    return pa.table({"vec": [row.tolist() for row in rng.normal(size=(n, 3)).astype(np.float32)],
                     "label": rng.integers(0, 2, n)})


def build_datasets(options):
    return VectorData(options).datasets()


def check_split(ds, n, val_fraction):
    n_train, n_val = ds["train"].count(), ds["val"].count()
    assert n_train + n_val == n and abs(n_val - n * val_fraction) <= 1
    assert ds["train"].columns() == ["x"]
    batch = next(iter(ds["train"].iter_batches(batch_size=16, batch_format="numpy")))
    out = VectorCodec(data_dim=3, latent_dim=2).collate_columns(batch)
    assert out["x"].shape == (16, 3)


def test_parquet(ray_local, tmp_path):
    pq.write_table(vectors_table(), tmp_path / "train.parquet")
    ds = build_datasets(VectorOptions(source="files", path=str(tmp_path / "train.parquet"), column="vec",
                                   val_fraction=0.1))
    check_split(ds, 200, 0.1)


def test_arrow_folder(ray_local, tmp_path):
    table = vectors_table()
    feather.write_feather(table.slice(0, 100), tmp_path / "a.arrow")
    feather.write_feather(table.slice(100), tmp_path / "b.arrow")
    check_split(build_datasets(VectorOptions(source="files", path=str(tmp_path), column="vec", val_fraction=0.2)),
                200, 0.2)


def test_saved_datasets_folder(ray_local, tmp_path):
    import datasets

    datasets.Dataset(vectors_table()).save_to_disk(str(tmp_path / "hf"))
    check_split(build_datasets(VectorOptions(source="hf_disk", path=str(tmp_path / "hf"), column="vec")), 200, 0.1)


def test_errors_name_the_problem(ray_local, tmp_path):
    pq.write_table(vectors_table(), tmp_path / "train.parquet")
    with pytest.raises(ConfigError, match=r"no column 'text'.*\['vec', 'label'\]"):
        build_datasets(VectorOptions(source="files", path=str(tmp_path / "train.parquet"), column="text"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_datasets(VectorOptions(source="files", path=str(tmp_path / "missing.parquet")))
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("hi")
    with pytest.raises(ConfigError, match=r"no \.parquet.*\.txt"):
        build_datasets(VectorOptions(source="files", path=str(tmp_path / "sub")))
    with pytest.raises(ConfigError, match="data.path is required"):
        VectorOptions(source="files").validate()
