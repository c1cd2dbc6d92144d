"""Receipts -> one predicted label per word, with its confidence: what propose and suggest use.

`load_model_dir(dir)` is a ReceiptTagger of a run's best/ (PyTorch) or an `export --onnx`
folder (ONNX Runtime, picked when the folder holds model.onnx / model.int8.onnx).
`predict_words` windows each receipt as training did (the max_seq_length/window_overlap
saved in label_map.json), runs the model through the tagger and keeps, for every word, the
window where it has the most context (training/features.chosen_windows). Per word:

- `label`: the entity type of its argmax tag without B-/I- (`O` for none);
- `confidence`: the probability of that type, P(B-X) + P(I-X) at the word's first
  sub-token (P(O) for `O`);
- `entropy`: the entropy (natural log) of the word's full tag distribution; suggest's
  uncertainty is its mean over the receipt's words.

The tagger gives each word its argmax tag; this adds the per-type confidence and the entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..sources import Receipt
from .tagger import ReceiptTagger


@dataclass(frozen=True)
class WordPrediction:
    label: str
    confidence: float
    entropy: float


def load_model_dir(model_dir: str | Path, precision: str = "auto", batch_size: int = 16) -> ReceiptTagger:
    """A run's best/ (PyTorch) or an ONNX export; `precision` (auto|fp32|int8) picks the ONNX file."""
    return ReceiptTagger.from_pretrained(model_dir, batch_size=batch_size, onnx_precision=precision)


def receipt_sequences(receipts: list[Receipt]) -> list[dict]:
    """Untagged sequences (texts and 0-1000 boxes) in the form training/features.build_examples takes."""
    from ..training.recipe import normalize_box

    return [
        {"texts": [w.text for w in r.words], "boxes": [normalize_box(w.box, r.width, r.height) for w in r.words]}
        for r in receipts
    ]


def predict_words(tagger: ReceiptTagger, receipts: list[Receipt]) -> list[list[WordPrediction]]:
    """For each receipt, one WordPrediction per word (see the module docstring)."""
    from ..training.features import build_examples, chosen_windows

    seqs = receipt_sequences(receipts)
    examples, windows = build_examples(seqs, tagger.tokenizer, {}, tagger.max_seq_length, tagger.window_overlap)
    probs = tagger.token_probs(examples)
    labels = [tagger.id2label[i] for i in range(len(tagger.id2label))]
    types = sorted({t[2:] for t in labels if t != "O"})
    # Columns of each entity type (B- and I-), to sum a word's probability per type.
    type_columns = {t: [i for i, name in enumerate(labels) if name[2:] == t and name != "O"] for t in types}
    out = []
    for seq in chosen_windows(windows, [len(s["texts"]) for s in seqs]):
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
