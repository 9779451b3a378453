"""Text data: the offline corpus, and a user's files with bad rows skipped and counted, never a crash."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diled.data.text import clean_text, default_corpus, guardian_headlines, read_user_texts, split_table


def test_default_corpus_is_the_offline_text():
    table, stats = default_corpus()
    assert table.column_names == ["text", "label", "source"]
    assert 40_000 < table.num_rows < 52_000  # ~12.8k snippets + ~38k tweets, cleaned and deduplicated
    assert set(table.column("label").to_pylist()) == {"positive", "negative", "neutral"}
    assert set(table.column("source").to_pylist()) == {"rotten_tomatoes", "tweets"}
    texts = table.column("text").to_pylist()
    assert len({t.lower() for t in texts}) == len(texts)
    assert all(3 <= len(t.split()) <= 30 for t in texts)
    assert stats.kept == table.num_rows and stats.duplicate > 0


def test_split_is_seeded_and_disjoint():
    table = pa.table({"text": [f"sentence number {i}" for i in range(100)], "label": ["x"] * 100})
    a, b = split_table(table, 0.1, 0.2, seed=3), split_table(table, 0.1, 0.2, seed=3)
    assert {k: v.num_rows for k, v in a.items()} == {"val": 10, "test": 20, "train": 70}
    assert all(a[k].equals(b[k]) for k in a)
    seen = [set(a[k].column("text").to_pylist()) for k in a]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_clean_text():
    assert clean_text("  Great &amp; fun   http://x.co/abc \x00 movie\n") == "Great & fun movie"


def test_text_file_skips_and_counts_bad_lines(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"a perfectly fine sentence here\n\n   \nshort\n" + b"bad \xff\xfe bytes in this line\n"
                     + (" ".join(["long"] * 100)).encode() + b"\na perfectly fine sentence here\nanother good one ok\n")
    table, stats = read_user_texts(path, min_words=2, max_words=20)
    assert table.column("text").to_pylist() == ["a perfectly fine sentence here", "another good one ok"]
    assert stats.bad_encoding == 1 and stats.empty == 2 and stats.too_short == 1
    assert stats.too_long == 1 and stats.duplicate == 1


def test_csv_with_bad_bytes_names_the_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"text,label\nfine sentence,positive\nbroken \xff here,negative\n")
    with pytest.raises(ValueError, match="line 3 is not valid UTF-8"):
        read_user_texts(path)


def test_csv_and_jsonl_columns(tmp_path):
    (tmp_path / "d.csv").write_text("review,stars\ngood film indeed,5\n,3\nawful film indeed,1\n")
    table, stats = read_user_texts(tmp_path / "d.csv", column="review", label_column="stars")
    assert table.column("label").to_pylist() == ["5", "1"] and stats.empty == 1
    with pytest.raises(ValueError, match=r"no column 'text'; columns: \['review', 'stars'\]"):
        read_user_texts(tmp_path / "d.csv")
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "one two three"}) + "\n" + "{not json\n")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_user_texts(tmp_path / "d.jsonl")


def test_parquet_and_saved_datasets(tmp_path):
    table = pa.table({"sentence": ["the first example", "the second example", None]})
    pq.write_table(table, tmp_path / "d.parquet")
    out, stats = read_user_texts(tmp_path / "d.parquet", column="sentence")
    assert out.num_rows == 2 and stats.empty == 1
    import datasets

    datasets.Dataset(table).save_to_disk(str(tmp_path / "hf"))
    out, _ = read_user_texts(tmp_path / "hf", column="sentence")
    assert out.num_rows == 2


def test_unsupported_and_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_user_texts(tmp_path / "nope.txt")
    (tmp_path / "x.docx").write_text("hi")
    with pytest.raises(ValueError, match="unsupported"):
        read_user_texts(tmp_path / "x.docx")


def test_split_parts_are_shuffled_not_in_file_order():
    # the corpus files are grouped by topic: a split in file order would train topic after topic
    table = pa.table({"text": [f"s{i}" for i in range(1000)], "label": ["x"] * 1000})
    order = [int(t[1:]) for t in split_table(table, 0.1, 0.1, seed=0)["train"].column("text").to_pylist()]
    assert order != sorted(order)
    assert sum(a < b for a, b in zip(order, order[1:])) < 0.6 * len(order)


def test_the_second_test_set_is_offline_news_that_the_corpus_never_saw():
    headlines = guardian_headlines()
    assert len(headlines) > 4000
    assert all(3 <= len(t.split()) <= 30 and t == clean_text(t) for t in headlines)
    assert len({t.lower() for t in headlines}) == len(headlines)  # deduplicated
    corpus = {t.lower() for t in default_corpus()[0].column("text").to_pylist()}
    assert not any(t.lower() in corpus for t in headlines)
