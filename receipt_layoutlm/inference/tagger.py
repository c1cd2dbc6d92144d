"""`ReceiptTagger`: a trained model (a run's best/) applied to receipts from Python.

    tagger = ReceiptTagger.from_pretrained("/tmp/receipt_layoutlm/receipts-full/best")
    result = tagger.predict({"width": 600, "height": 1200, "words": [{"text": "TOTAL", "box": [...]}, ...]})
    result.entities  # [Entity(label="AMOUNT", text="12.50", words=[31], box=[...], confidence=0.97), ...]

Receipts take the path they took in training: boxes onto the 0..1000 grid, windows of whole
words of at most `max_seq_length` sub-tokens overlapping by `window_overlap` (both read from
best/label_map.json, as is the example unit), each word read from the window where it has
the most context. A word's confidence is the softmax probability of its label at its first
sub-token in that window; an entity is a run of words with one label inside one OCR line.
A model trained with --box-level line reads line boxes, and one trained with --decode bio
decodes each sequence with the BIO constraint (both recorded in label_map.json).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..sources.receipt import Receipt


@dataclass
class WordLabel:
    text: str
    box: tuple[float, float, float, float]  # page units, as given
    line: int
    label: str  # entity type, or "O"
    tag: str  # the BIO tag the model chose
    confidence: float


@dataclass
class Entity:
    label: str
    text: str
    words: list[int]  # indices into the receipt's words
    box: list[float]  # union of the words' boxes, page units
    confidence: float  # mean of the words' confidences


@dataclass
class Prediction:
    """One receipt's words with their labels, and the entities they form."""

    id: str
    words: list[WordLabel]
    entities: list[Entity] = field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        return [w.tag for w in self.words]

    def to_dict(self) -> dict:
        return {"id": self.id, "words": [asdict(w) for w in self.words], "entities": [asdict(e) for e in self.entities]}


def as_receipt(obj, index: int = 0) -> Receipt:
    """A `Receipt`, or a dict in the dataset format (docs/dataset-format.md; `id` optional), checked strictly."""
    if isinstance(obj, Receipt):
        return obj
    from ..sources.jsonl import receipt_from_dict

    if isinstance(obj, dict) and "id" not in obj:
        obj = {"id": f"receipt-{index}", **obj}
    return receipt_from_dict(obj, f"receipt {obj.get('id') if isinstance(obj, dict) else index}")


def entities_of(receipt: Receipt, words: list[WordLabel]) -> list[Entity]:
    """Spans of one label: B- starts one, and a span never crosses an OCR line (as in training's tags)."""
    spans: list[list[int]] = []
    for i, w in enumerate(words):
        if w.label == "O":
            continue
        prev = spans[-1][-1] if spans else None
        continues = (
            prev == i - 1 and words[prev].label == w.label and words[prev].line == w.line and w.tag.startswith("I-")
        )
        if continues:
            spans[-1].append(i)
        else:
            spans.append([i])
    out = []
    for idx in spans:
        boxes = [receipt.words[i].box for i in idx]
        out.append(
            Entity(
                label=words[idx[0]].label,
                text=" ".join(receipt.words[i].text for i in idx),
                words=idx,
                box=[
                    min(b[0] for b in boxes),
                    min(b[1] for b in boxes),
                    max(b[2] for b in boxes),
                    max(b[3] for b in boxes),
                ],
                confidence=sum(words[i].confidence for i in idx) / len(idx),
            )
        )
    return out


class ReceiptTagger:
    """A trained receipt model with the recipe settings it was trained with."""

    def __init__(self, model, tokenizer, settings: dict, batch_size: int = 16, device: str | None = None):
        """model: a PyTorch token classifier, or an OnnxTokenClassifier (inference/onnx.py)."""
        import torch

        from .onnx import OnnxTokenClassifier

        self.onnx = isinstance(model, OnnxTokenClassifier)
        self.model = model if self.onnx else model.eval()
        self.tokenizer = tokenizer
        self.settings = settings  # label_map.json: label_list, job_id and the recipe settings
        self.id2label = model.id2label if self.onnx else {int(k): v for k, v in model.config.id2label.items()}
        self.example_unit = settings.get("example_unit", "receipt")
        self.max_seq_length = int(settings.get("max_seq_length", 512))
        self.window_overlap = int(settings.get("window_overlap", 128))
        self.merge_amounts = bool(settings.get("merge_amounts", False))
        self.allowed_labels = list(settings.get("allowed_labels") or [])
        self.box_level = settings.get("box_level", "word")  # models from before these settings: word, argmax
        self.decode = settings.get("decode", "argmax")
        self.batch_size = batch_size
        self.device = "cpu" if self.onnx else device or ("cuda" if torch.cuda.is_available() else "cpu")
        if not self.onnx:
            self.model.to(self.device)

    @property
    def labels(self) -> list[str]:
        """The entity types the model knows, in label-list order."""
        return [t[2:] for t in self.id2label.values() if t.startswith("B-")]

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, batch_size: int = 16, device: str | None = None, onnx_precision: str = "auto"
    ) -> ReceiptTagger:
        """Load a best/ folder written by `layoutlm-cli train` (model, tokenizer, label_map.json), or a folder
        written by `layoutlm-cli export --onnx`: then ONNX Runtime runs it (`onnx_precision` auto|fp32|int8)."""
        from ..model import load_tokenizer, load_trained
        from .onnx import OnnxTokenClassifier, is_onnx_dir

        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise UserError(f"Model directory {path} does not exist; pass a run's best/ folder.")
        label_map = path / "label_map.json"
        if not label_map.is_file() or not (path / "config.json").is_file():
            raise UserError(
                f"{path} is not a trained receipt model (no label_map.json or config.json); "
                "pass the best/ folder that `layoutlm-cli train` wrote."
            )
        try:
            settings = json.loads(label_map.read_text())
            label_list = settings["label_list"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{label_map} is not a label map written by training; re-copy the best/ folder.") from None
        if is_onnx_dir(path):
            runner = OnnxTokenClassifier(path, onnx_precision)
            if [runner.id2label[i] for i in range(len(runner.id2label))] != list(label_list):
                raise UserError(f"{path}: label_map.json and the ONNX config disagree on the labels; export again.")
            return cls(runner, load_tokenizer(path), settings, batch_size=batch_size)
        try:
            tokenizer, model = load_trained(path)
        except UserError:
            raise
        except Exception as e:  # transformers raises OSError, ValueError, safetensors errors...
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise UserError(f"{path} does not hold a loadable model ({first}); pass a complete best/ folder.") from None
        if [model.config.id2label[i] for i in range(model.config.num_labels)] != list(label_list):
            raise UserError(f"{path}: label_map.json and config.json disagree on the labels; re-copy the best/ folder.")
        return cls(model, tokenizer, settings, batch_size=batch_size, device=device)

    def predict(self, receipts):
        """Label one receipt (a dataset-format dict or a `Receipt`) -> `Prediction`; a list -> a list."""
        single = not isinstance(receipts, (list, tuple))
        items = [receipts] if single else list(receipts)
        results = self.predict_receipts([as_receipt(x, i) for i, x in enumerate(items)])
        return results[0] if single else results

    def predict_receipts(self, receipts: list[Receipt]) -> list[Prediction]:
        from ..training.decoding import decode_words
        from ..training.features import build_examples, chosen_windows
        from ..training.recipe import line_boxes, normalize_box

        # Sequences as in training: whole receipts, or one OCR line each (example_unit=line).
        seqs, owners = [], []  # owners[k] = (receipt index, receipt word index of each sequence word)
        for r_i, r in enumerate(receipts):
            boxes = [normalize_box(w.box, r.width, r.height) for w in r.words]
            if self.box_level == "line":
                boxes = line_boxes(boxes, [w.line for w in r.words])
            groups: dict[int, list[int]] = {}
            for i, w in enumerate(r.words):
                groups.setdefault(w.line if self.example_unit == "line" else 0, []).append(i)
            for idx in groups.values():
                seqs.append(
                    {
                        "texts": [r.words[i].text for i in idx],
                        "boxes": [boxes[i] for i in idx],
                    }
                )
                owners.append((r_i, idx))
        examples, windows = build_examples(seqs, self.tokenizer, {}, self.max_seq_length, self.window_overlap)
        ids, probs, log_probs = self.score_examples(examples, keep_scores=self.decode == "bio")
        chosen = chosen_windows(windows, [len(s["texts"]) for s in seqs])

        per_receipt: list[dict[int, tuple[str, float]]] = [{} for _ in receipts]
        for (r_i, idx), picks in zip(owners, chosen):
            if self.decode == "bio":  # the best tag sequence with no I-X after O or another label
                scores = [None if p is None else log_probs[p[0]][p[1]] for p in picks]
                label2id = {t: k for k, t in self.id2label.items()}
                for i, tag, row in zip(idx, decode_words(scores, self.id2label), scores):
                    per_receipt[r_i][i] = (tag, 0.0 if row is None else math.exp(row[label2id[tag]]))
                continue
            for i, pick in zip(idx, picks):
                tag, conf = (
                    ("O", 0.0) if pick is None else (self.id2label[ids[pick[0]][pick[1]]], probs[pick[0]][pick[1]])
                )
                per_receipt[r_i][i] = (tag, conf)
        results = []
        for r, tags in zip(receipts, per_receipt):
            words = [
                WordLabel(w.text, w.box, w.line, tags[i][0][2:] if tags[i][0] != "O" else "O", tags[i][0], tags[i][1])
                for i, w in enumerate(r.words)
            ]
            results.append(Prediction(r.id, words, entities_of(r, words)))
        return results

    def score_examples(self, examples: list[dict], keep_scores: bool = False):
        """Per example and token: the argmax label id and its softmax probability, and with keep_scores
        the log-probabilities of every label (numpy, [tokens, labels]), else None."""
        probs = self.token_probs(examples)
        ids = [p.argmax(-1).tolist() for p in probs]
        best = [p.max(-1).tolist() for p in probs]
        log_probs = [np.log(np.clip(p, 1e-30, None)) for p in probs] if keep_scores else None
        return ids, best, log_probs

    def token_probs(self, examples: list[dict]) -> list:
        """Per example, the label probabilities of each token (numpy [tokens, labels]), batched by length."""
        if self.onnx:
            from .onnx import predict_probs

            return predict_probs(self.model, examples, self.batch_size)
        import torch

        from ..training.collate import pad_batch

        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
        probs: list = [None] * len(examples)
        with torch.inference_mode():
            for k in range(0, len(order), self.batch_size):
                idx = order[k : k + self.batch_size]
                batch = pad_batch(
                    [{key: v for key, v in examples[i].items() if key != "labels"} for i in idx],
                    pad_token_id=self.model.config.pad_token_id or 0,
                )
                logits = self.model(**{key: v.to(self.device) for key, v in batch.items()}).logits
                rows = logits.float().softmax(-1).cpu().numpy()
                for row, i in zip(rows, idx):
                    probs[i] = row[: len(examples[i]["input_ids"])]
        return probs
