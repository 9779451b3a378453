"""A sentiment classifier for judging generated text: logistic regression on frozen sentence embeddings
of the offline MiniLM (all-MiniLM-L6-v2 weights, masked mean-pool), trained on the training split."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class SentimentProbe:
    """Binary positive / negative classifier. ``fit(texts, labels)`` then ``predict(texts)``."""

    def __init__(self, encoder_path: str | None = None, batch_size: int = 256, max_length: int = 64):
        from transformers import AutoModel, AutoTokenizer

        from diled.codecs.text import default_encoder_path

        path = encoder_path or default_encoder_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.encoder = AutoModel.from_pretrained(path).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self.head = nn.Linear(self.encoder.config.hidden_size, 1)
        self.classes = ("negative", "positive")

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            h = self.encoder(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            out.append((h * m).sum(1) / m.sum(1).clamp(min=1))
        return torch.cat(out) if out else torch.zeros(0, self.encoder.config.hidden_size)

    def fit(self, texts: list[str], labels: list[str], steps: int = 300, weight_decay: float = 1e-4):
        keep = [(t, l) for t, l in zip(texts, labels) if l in self.classes]
        if len({l for _, l in keep}) < 2:
            raise ValueError("SentimentProbe.fit needs both positive and negative examples")
        x = self.embed([t for t, _ in keep])
        y = torch.tensor([float(l == "positive") for _, l in keep])
        self.mean, self.std = x.mean(0), x.std(0).clamp(min=1e-6)
        x = (x - self.mean) / self.std
        opt = torch.optim.LBFGS(self.head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(self.head(x).squeeze(-1), y)
            loss = loss + weight_decay * self.head.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return self

    @torch.no_grad()
    def predict(self, texts: list[str]) -> list[str]:
        if not texts:
            return []
        logits = self.head((self.embed(texts) - self.mean) / self.std).squeeze(-1)
        return [self.classes[int(v > 0)] for v in logits]

    def accuracy(self, texts: list[str], labels: list[str]) -> float:
        keep = [(t, l) for t, l in zip(texts, labels) if l in self.classes]
        pred = self.predict([t for t, _ in keep])
        return sum(p == l for p, (_, l) in zip(pred, keep)) / max(len(keep), 1)

    def probability(self, texts: list[str], label: str) -> list[float]:
        """Each text's probability of ``label`` (positive or negative): a judge for ``edit_judged``."""
        if label not in self.classes:
            raise ValueError(f"unknown label {label!r}; this judge knows {list(self.classes)}")
        if not texts:
            return []
        with torch.no_grad():
            positive = torch.sigmoid(self.head((self.embed(texts) - self.mean) / self.std).squeeze(-1))
        return (positive if label == "positive" else 1 - positive).tolist()


class TfidfSentiment:
    """A second, independent judge: logistic regression on word and word-bigram TF-IDF features
    (scikit-learn), sharing no features with the MiniLM probe or the model. Same interface; its classes are
    positive / negative unless given (any labels of the data: a judge for ``diled.editing.edit_judged``).
    ``save(folder)`` / ``load(folder)`` write and read it without pickle (JSON and safetensors)."""

    def __init__(self, classes: tuple[str, ...] | list[str] = ("negative", "positive")):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)
        self.model = LogisticRegression(max_iter=1000, C=4.0)
        self.classes = tuple(classes)

    def fit(self, texts: list[str], labels: list[str]):
        keep = [(t, l) for t, l in zip(texts, labels) if l in self.classes]
        if {l for _, l in keep} != set(self.classes):
            raise ValueError(f"TfidfSentiment.fit needs examples of each of its classes {list(self.classes)}, "
                             f"got {sorted({l for _, l in keep})}")
        self.model.fit(self.vectorizer.fit_transform([t for t, _ in keep]), [l for _, l in keep])
        return self

    def predict(self, texts: list[str]) -> list[str]:
        return [str(p) for p in self.model.predict(self.vectorizer.transform(texts))] if texts else []

    def accuracy(self, texts: list[str], labels: list[str]) -> float:
        keep = [(t, l) for t, l in zip(texts, labels) if l in self.classes]
        pred = self.predict([t for t, _ in keep])
        return sum(p == l for p, (_, l) in zip(pred, keep)) / max(len(keep), 1)

    def probability(self, texts: list[str], label: str) -> list[float]:
        """Each text's probability of ``label`` (one of its classes): a judge for ``edit_judged``."""
        if label not in self.classes:
            raise ValueError(f"unknown label {label!r}; this judge knows {list(self.classes)}")
        if not texts:
            return []
        column = list(self.model.classes_).index(label)
        return self.model.predict_proba(self.vectorizer.transform(texts))[:, column].tolist()

    def save(self, folder: str | Path) -> Path:
        """``judge.json`` (settings, classes, the vocabulary) and ``judge.safetensors`` (idf, coefficients)."""
        import json

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vocabulary = {k: int(v) for k, v in self.vectorizer.vocabulary_.items()}
        (folder / "judge.json").write_text(json.dumps({
            "kind": "tfidf_logistic_regression", "classes": list(self.classes),
            "model_classes": [str(c) for c in self.model.classes_], "vocabulary": vocabulary}) + "\n")
        save_file({"idf": torch.from_numpy(self.vectorizer.idf_.copy()),
                   "coef": torch.from_numpy(self.model.coef_.copy()),
                   "intercept": torch.from_numpy(self.model.intercept_.copy())}, str(folder / "judge.safetensors"))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "TfidfSentiment":
        import json

        import numpy as np
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "judge.json").read_text())
        if config.get("kind") != "tfidf_logistic_regression":
            raise ValueError(f"{folder / 'judge.json'} holds a judge of kind {config.get('kind')!r}, not "
                             "'tfidf_logistic_regression'")
        judge = cls(config["classes"])
        weights = load_file(str(folder / "judge.safetensors"))
        judge.vectorizer.set_params(vocabulary=config["vocabulary"])
        judge.vectorizer.idf_ = weights["idf"].numpy()
        judge.model.classes_ = np.array(config["model_classes"])
        judge.model.coef_, judge.model.intercept_ = weights["coef"].numpy(), weights["intercept"].numpy()
        return judge
