"""Core ML export (coremltools) of a trained token classifier, for the users' iOS app.

`export_coreml(best/, out/)` writes out/model.mlpackage (an ML Program, iOS 16+/macOS 13+),
the tokenizer files, config.json, label_map.json and coreml.json. The model:

- inputs `input_ids` [1, S], `bbox` [1, S, 4], `attention_mask` [1, S] (int32), output
  `logits` [1, S, labels]; batch 1 (one window at a time, as an app labels a receipt);
- S is a ranged dimension from 2 to --max-seq-length (default: the length the model was
  trained with, label_map.json's max_seq_length), so the app feeds each window unpadded;
- fp16 compute precision; `--quantize int8` also stores the weights as int8 (linear
  symmetric, per channel, linear layers; embeddings stay fp16).

The graph is traced with TorchScript (eager attention, no SDPA) and converted with
ct.convert. Core ML predictions run only on macOS/iOS: on Linux the conversion, the
model's declared inputs/outputs/shapes and the determinism of the conversion are checked
(tests/test_coreml.py), the predictions are not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UserError

MLPACKAGE = "model.mlpackage"
TESTED = "coremltools 9.0 with torch 2.13.0 (conversion checked on Linux; coremltools itself lists torch 2.7 as tested)"


def _coremltools():
    try:
        import coremltools
    except ImportError:
        raise UserError(
            "export --coreml needs coremltools: `pip install 'coremltools>=9.0'` (tested: coremltools 9.0, torch 2.13)."
        ) from None
    return coremltools


def export_coreml(
    model_dir: str | Path, out_dir: str | Path, quantize: str | None = None, max_seq_length: int | None = None
) -> dict:
    import json

    import numpy as np
    import torch
    from transformers import LayoutLMForTokenClassification

    from ..training.artifacts import atomic_write_json, replace_dir
    from .onnx import COPIED_FILES, INPUT_NAMES, _logits_module

    ct = _coremltools()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "label_map.json").exists() or not (model_dir / "config.json").exists():
        raise UserError(f"{model_dir} has no label_map.json/config.json; pass a best/ folder written by `train`.")
    if not any(model_dir.glob("*.safetensors")):
        raise UserError(f"{model_dir} holds no PyTorch weights (model.safetensors); pass the run's best/ folder.")
    settings = json.loads((model_dir / "label_map.json").read_text())
    model = LayoutLMForTokenClassification.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    longest = max_seq_length or settings.get("max_seq_length") or 512
    if not 2 <= longest <= model.config.max_position_embeddings:
        raise UserError(f"--max-seq-length {longest} must lie between 2 and {model.config.max_position_embeddings}.")
    module = _logits_module(model)
    example = (
        torch.full((1, longest), model.config.pad_token_id or 0, dtype=torch.long),
        torch.zeros((1, longest, 4), dtype=torch.long),
        torch.ones((1, longest), dtype=torch.long),
    )
    with torch.no_grad():
        traced = torch.jit.trace(module, example)
    seq = ct.RangeDim(lower_bound=2, upper_bound=longest, default=longest)
    shapes = {"input_ids": (1, seq), "bbox": (1, seq, 4), "attention_mask": (1, seq)}
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name, shape=shapes[name], dtype=np.int32) for name in INPUT_NAMES],
        outputs=[ct.TensorType("logits")],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16,
        minimum_deployment_target=ct.target.iOS16,
    )
    if quantize == "int8":
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        # Linear layers only, like the ONNX int8 export: embedding tables have all-zero rows (padding)
        # whose per-channel scale would be 0.
        linear = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")
        config = OptimizationConfig(op_type_configs={"linear": linear})
        mlmodel = linear_quantize_weights(mlmodel, config)
    elif quantize is not None:
        raise UserError(f"--quantize {quantize!r} is not supported; use --quantize int8 or leave it out.")
    mlmodel.short_description = f"LayoutLM token classifier ({len(model.config.id2label)} tags) from {model_dir.name}"
    info = {
        "format": "coreml",
        "file": MLPACKAGE,
        "source": str(model_dir.resolve()),
        "precision": "fp16" + (" compute, int8 weights" if quantize else ""),
        "min_sequence": 2,
        "max_sequence": longest,
        "inputs": {name: ["1", "S", "4"][: 3 if name == "bbox" else 2] for name in INPUT_NAMES},
        "output": {"logits": ["1", "S", str(len(model.config.id2label))]},
        "coremltools": ct.__version__,
        "torch": torch.__version__,
        "tested": TESTED,
    }

    def fill(tmp: Path) -> None:
        mlmodel.save(str(tmp / MLPACKAGE))
        for name in COPIED_FILES:
            if (model_dir / name).exists():
                shutil.copy2(model_dir / name, tmp / name)
        atomic_write_json(tmp / "coreml.json", info)

    replace_dir(out_dir, fill)
    return info
