"""ONNX export of a trained token classifier, and prediction with ONNX Runtime.

`export_onnx(best/, out/)` writes a self-contained folder:

    out/model.onnx        fp32 graph, inputs input_ids/bbox/attention_mask (int64,
                          [batch, sequence], bbox [batch, sequence, 4]) -> logits
                          [batch, sequence, num_labels]; batch and sequence are dynamic
    out/model.int8.onnx   with --quantize int8: the same graph with the MatMul weights
                          quantized to int8 per channel, activations quantized on the fly
                          (onnxruntime.quantization.quantize_dynamic); embeddings stay fp32
    out/ tokenizer files, config.json and label_map.json copied from best/
    out/export.json       what was exported, with which versions

The graph comes from torch.onnx's dynamo exporter (torch.export + onnxscript), the
maintained path in torch 2.x. Sequences longer than the model's position table (512) are
never fed: the windowing in training/features.py caps them at --max-seq-length.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..errors import UserError

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INPUT_NAMES = ("input_ids", "bbox", "attention_mask")
# Files from best/ that make the export usable alone (tokenizer, label map, model config).
COPIED_FILES = (
    "label_map.json",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def is_onnx_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / FP32_FILE).exists() or (path / INT8_FILE).exists()


def export_onnx(model_dir: str | Path, out_dir: str | Path, quantize: str | None = None) -> dict:
    """Export best/ (a trained LayoutLM token classifier) to ONNX in out_dir; returns export.json's content."""
    import torch

    from ..model import load_trained
    from ..training.artifacts import atomic_write_json, replace_dir

    if quantize not in (None, "int8"):
        raise UserError(f"--quantize {quantize!r} is not supported; use --quantize int8 or leave it out.")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "label_map.json").exists():
        raise UserError(f"{model_dir} has no label_map.json; pass a best/ folder written by `layoutlm-cli train`.")
    if is_onnx_dir(model_dir):
        raise UserError(f"{model_dir} already holds an ONNX export; pass the PyTorch best/ folder it came from.")
    _, model = load_trained(model_dir)
    model.eval()
    logits_module = _logits_module(model)
    # A small example fixes the traced graph's dtypes; the shapes are declared dynamic below.
    batch, seq = 2, 16
    example = {
        "input_ids": torch.full((batch, seq), model.config.pad_token_id or 0, dtype=torch.long),
        "bbox": torch.zeros((batch, seq, 4), dtype=torch.long),
        "attention_mask": torch.ones((batch, seq), dtype=torch.long),
    }
    batch_dim = torch.export.Dim("batch")
    seq_dim = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    dynamic = {"input_ids": {0: batch_dim, 1: seq_dim}, "bbox": {0: batch_dim, 1: seq_dim}}
    dynamic["attention_mask"] = {0: batch_dim, 1: seq_dim}

    def fill(tmp: Path) -> None:
        # The exporter prints its progress and warns that both dims keep our names; keep the CLI quiet.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                logits_module,
                (),
                kwargs=example,
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=["logits"],
                dynamic_shapes=dynamic,
                verbose=False,
            )
        program.save(str(tmp / FP32_FILE), external_data=False)  # one file: LayoutLM-base is far below 2 GB
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint meant for CNNs
            try:
                # MatMul weights only, one scale per output channel: quantizing the embedding tables
                # (Gather) as well costs entity F1 for little speed (bench/predict_latency_onnx.py).
                quantize_dynamic(
                    tmp / FP32_FILE,
                    tmp / INT8_FILE,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"],
                    per_channel=True,
                )
            finally:
                root.setLevel(level)
        for name in COPIED_FILES:
            if (model_dir / name).exists():
                shutil.copy2(model_dir / name, tmp / name)
        atomic_write_json(tmp / "export.json", info)

    import onnxruntime

    info = {
        "format": "onnx",
        "source": str(model_dir.resolve()),
        "files": [FP32_FILE] + ([INT8_FILE] if quantize else []),
        "quantize": quantize,
        "inputs": list(INPUT_NAMES),
        "dynamic_axes": {"batch": 0, "sequence": 1},
        "max_sequence": model.config.max_position_embeddings,
        "exporter": "torch.onnx.export(dynamo=True)",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    replace_dir(out_dir, fill)
    return info


def _logits_module(model):
    """The HF model behind a module that takes exactly our three inputs and returns logits only."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, bbox, attention_mask):
            return self.inner(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, return_dict=True).logits

    return LogitsOnly(model).eval()


class OnnxTokenClassifier:
    """An exported model run by ONNX Runtime on the CPU: `logits(batch)` like the PyTorch model's."""

    def __init__(self, model_dir: str | Path, precision: str = "auto", threads: int | None = None):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        files = {"fp32": FP32_FILE, "int8": INT8_FILE}
        if precision == "auto":  # the quantized model when the export made one: that is what it was asked for
            precision = "int8" if (self.model_dir / INT8_FILE).exists() else "fp32"
        if precision not in files or not (self.model_dir / files[precision]).exists():
            raise UserError(
                f"{self.model_dir} has no {files.get(precision, precision)}; export it with "
                f"`layoutlm-cli export MODEL_DIR --onnx{' --quantize int8' if precision == 'int8' else ''} -o OUT`."
            )
        self.precision = precision
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.model_dir / files[precision]), options, providers=["CPUExecutionProvider"]
        )
        config = json.loads((self.model_dir / "config.json").read_text())
        self.pad_token_id = config.get("pad_token_id") or 0
        self.id2label = {int(k): v for k, v in config["id2label"].items()}

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """batch: input_ids/bbox/attention_mask as int arrays ([B, T], [B, T, 4], [B, T]) -> [B, T, labels]."""
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in INPUT_NAMES}
        return self.session.run(["logits"], feed)[0]


def _pad_numpy(examples: list[dict], pad_token_id: int) -> dict[str, np.ndarray]:
    """Right-pad unpadded examples (lists of ints) to the longest, as training/collate.pad_batch does."""
    longest = max(len(e["input_ids"]) for e in examples)
    n = len(examples)
    input_ids = np.full((n, longest), pad_token_id, dtype=np.int64)
    bbox = np.zeros((n, longest, 4), dtype=np.int64)
    mask = np.zeros((n, longest), dtype=np.int64)
    for i, e in enumerate(examples):
        t = len(e["input_ids"])
        input_ids[i, :t] = e["input_ids"]
        bbox[i, :t] = e["bbox"]
        mask[i, :t] = e["attention_mask"]
    return {"input_ids": input_ids, "bbox": bbox, "attention_mask": mask}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def predict_probs(classifier: OnnxTokenClassifier, examples: list[dict], batch_size: int = 16) -> list[np.ndarray]:
    """Label probabilities per token ([tokens, labels] float32) for each unpadded example, in input order."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    by_index: dict[int, np.ndarray] = {}
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        logits = classifier.logits(_pad_numpy([examples[i] for i in idx], classifier.pad_token_id))
        for row, i in enumerate(idx):
            by_index[i] = softmax(logits[row, : len(examples[i]["input_ids"])].astype(np.float32))
    return [by_index[i] for i in range(len(examples))]


def predict_ids(classifier: OnnxTokenClassifier, examples: list[dict], batch_size: int = 16) -> list[list[int]]:
    """Same contract as model.predict_ids: argmax label ids per token, for each unpadded example."""
    return [p.argmax(-1).tolist() for p in predict_probs(classifier, examples, batch_size)]
