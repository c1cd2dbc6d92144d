"""Receipts -> one predicted label per word, with its confidence: what propose and suggest use.

`load_model_dir(dir)` takes a run's best/ (PyTorch) or an `export --onnx` folder (ONNX
Runtime, picked when the folder holds model.onnx / model.int8.onnx). `predict_words`
windows each receipt as training did (the max_seq_length/window_overlap saved in
label_map.json), runs the model and keeps, for every word, the window where it has the
most context (training/features.word_sources). Per word:

- `label`: the entity type of its argmax tag without B-/I- (`O` for none);
- `confidence`: the probability of that type, P(B-X) + P(I-X) at the word's first
  sub-token (P(O) for `O`);
- `entropy`: the entropy (natural log) of the word's full tag distribution; suggest's
  uncertainty is its mean over the receipt's words.

This is the one seam between receipts and the model: ReceiptTagger can take its place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..sources import Receipt


@dataclass
class LoadedModel:
    model_dir: Path
    tokenizer: object
    runner: object  # a PyTorch token classifier or an OnnxTokenClassifier
    id2label: dict[int, str]
    settings: dict = field(default_factory=dict)  # label_map.json: job_id, max_seq_length, merge_amounts, ...
    backend: str = "pytorch"

    @property
    def pad_token_id(self) -> int:
        if self.backend == "pytorch":
            return self.runner.config.pad_token_id or 0
        return self.runner.pad_token_id


@dataclass(frozen=True)
class WordPrediction:
    label: str
    confidence: float
    entropy: float


def load_model_dir(model_dir: str | Path, precision: str = "auto") -> LoadedModel:
    """A run's best/ (PyTorch) or an ONNX export; `precision` (auto|fp32|int8) picks the ONNX file."""
    from ..model import load_tokenizer, load_trained
    from .onnx import OnnxTokenClassifier, is_onnx_dir

    model_dir = Path(model_dir)
    label_map = model_dir / "label_map.json"
    if not label_map.exists():
        raise UserError(
            f"{model_dir} has no label_map.json; pass a best/ folder written by `layoutlm-cli train` "
            "or a folder written by `layoutlm-cli export`."
        )
    settings = json.loads(label_map.read_text())
    if is_onnx_dir(model_dir):
        runner = OnnxTokenClassifier(model_dir, precision)
        return LoadedModel(
            model_dir, load_tokenizer(model_dir), runner, runner.id2label, settings, f"onnx-{runner.precision}"
        )
    tokenizer, model = load_trained(model_dir)
    return LoadedModel(model_dir, tokenizer, model, {int(k): v for k, v in model.config.id2label.items()}, settings)


def token_ids(loaded: LoadedModel, examples: list[dict], batch_size: int = 16) -> list[list[int]]:
    """Argmax label ids per token (the contract of model.predict_ids), on either backend."""
    if loaded.backend == "pytorch":
        from ..model import predict_ids

        return predict_ids(loaded.runner, examples, batch_size)
    from .onnx import predict_ids

    return predict_ids(loaded.runner, examples, batch_size)


def token_probs(loaded: LoadedModel, examples: list[dict], batch_size: int = 16) -> list[np.ndarray]:
    """Label probabilities per token ([tokens, labels]) for each unpadded example, on either backend."""
    if loaded.backend != "pytorch":
        from .onnx import predict_probs

        return predict_probs(loaded.runner, examples, batch_size)
    import torch

    from ..training.collate import pad_batch

    model = loaded.runner.to("cpu")
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    by_index = {}
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            batch = pad_batch(
                [{kk: v for kk, v in examples[i].items() if kk != "labels"} for i in idx], loaded.pad_token_id
            )
            probs = model(**batch).logits.float().softmax(-1).numpy()
            for row, i in enumerate(idx):
                by_index[i] = probs[row, : len(examples[i]["input_ids"])]
    return [by_index[i] for i in range(len(examples))]


def receipt_sequences(receipts: list[Receipt]) -> list[dict]:
    """Untagged sequences (texts and 0-1000 boxes) in the form training/features.build_examples takes."""
    from ..training.recipe import normalize_box

    return [
        {"texts": [w.text for w in r.words], "boxes": [normalize_box(w.box, r.width, r.height) for w in r.words]}
        for r in receipts
    ]


def predict_words(loaded: LoadedModel, receipts: list[Receipt], batch_size: int = 16) -> list[list[WordPrediction]]:
    """For each receipt, one WordPrediction per word (see the module docstring)."""
    from ..training.features import build_examples, word_sources

    seqs = receipt_sequences(receipts)
    settings = loaded.settings
    examples, windows = build_examples(
        seqs, loaded.tokenizer, {}, settings.get("max_seq_length", 512), settings.get("window_overlap", 128)
    )
    probs = token_probs(loaded, examples, batch_size)
    labels = [loaded.id2label[i] for i in range(len(loaded.id2label))]
    types = sorted({t[2:] for t in labels if t != "O"})
    # Columns of each entity type (B- and I-), to sum a word's probability per type.
    type_columns = {t: [i for i, name in enumerate(labels) if name[2:] == t and name != "O"] for t in types}
    out = []
    for seq in word_sources(windows, [len(s["texts"]) for s in seqs]):
        words = []
        for source in seq:
            p = probs[source[0]][source[1]].astype(np.float64)
            tag = labels[int(p.argmax())]
            label = "O" if tag == "O" else tag[2:]
            confidence = p[labels.index("O")] if label == "O" else p[type_columns[label]].sum()
            entropy = float(-(p * np.log(np.clip(p, 1e-12, None))).sum())
            words.append(WordPrediction(label, round(float(confidence), 6), round(entropy, 6)))
        out.append(words)
    return out
