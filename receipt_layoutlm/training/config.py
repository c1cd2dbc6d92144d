"""TrainConfig: every setting of a training run, and the checks made before anything is recorded."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import UserError
from ..labels import resolve_allowed_labels
from ..store import PRIORITIES

# model.DEFAULT_PRETRAINED, spelled here too so that reading the flags does not import torch
# (tests/test_train_options.py checks they agree).
DEFAULT_PRETRAINED = "microsoft/layoutlm-base-uncased"
EXAMPLE_UNITS = ("receipt", "line")
SPLIT_BY = ("receipt", "merchant")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
BOX_LEVELS = ("word", "line")
DECODES = ("argmax", "bio")  # decoding.DECODES, spelled here so that reading the flags stays light
DEFAULT_OUTPUT_ROOT = "/tmp/receipt_layoutlm"  # a run without --output-dir writes to DEFAULT_OUTPUT_ROOT/<job-name>


def setting(default=None, help: str = "", **options):
    """A TrainConfig field and its command-line option (cli/options.py builds the option from it).

    options: choices, flag (the option name when it is not --<field-name>), envvar, required.
    A list default becomes a default_factory.
    """
    metadata = {"help": help, **options}
    if options.get("required"):
        return field(metadata=metadata)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every setting of a run; each field is also the `train` flag of the same name (help in metadata)."""

    job_name: str = setting(required=True, help=f"Name of the run; output goes to {DEFAULT_OUTPUT_ROOT}/<job-name>/.")
    dataset: str | None = setting(help="FILE.jsonl, wildreceipt:FILE or demo[:N]; without it, --dynamo-table is read.")
    dynamo_table: str | None = setting(
        envvar="DYNAMO_TABLE_NAME",
        help="The receipts table (data and, unless --job-store says otherwise, jobs); default: $DYNAMO_TABLE_NAME.",
    )
    label_status: list[str] = setting(["VALID"], help="Validation status of DynamoDB labels to train on (repeatable).")
    output_dir: str | None = setting(help="Where run.json, checkpoints and best/ go.")
    pretrained: str = setting(
        DEFAULT_PRETRAINED, help="Hub name, local model directory, `minilm` (offline) or `tiny` (tests)."
    )
    epochs: float = setting(3.0, help="Training epochs (a fraction stops part-way through the last).")
    batch_size: int = setting(8, help="Examples per batch, per device.")
    lr: float = setting(5e-5, help="Peak learning rate (AdamW).")
    warmup_ratio: float = setting(0.0, help="Linear warm-up over this fraction of all steps, then linear decay.")
    label_smoothing: float = setting(0.0, help="Label smoothing of the cross-entropy loss, in [0, 1).")
    weight_decay: float = setting(0.01, help="AdamW weight decay.")
    gradient_accumulation_steps: int = setting(1, help="Batches per optimiser step.")
    o_entity_ratio: float | None = setting(help="Thin all-O lines of the training split to about R x entity words.")
    merge_amounts: bool = setting(False, help="LINE_TOTAL, SUBTOTAL, TAX, GRAND_TOTAL become AMOUNT.")
    allowed_labels: list[str] = setting([], flag="--allowed-label", help="Keep only these labels (repeatable).")
    early_stopping_patience: int | None = setting(help="Stop after N evaluations without a better --checkpoint-metric.")
    val_ratio: float = setting(0.1, help="Fraction of receipts (or merchants, see --split-by) held out for validation.")
    split_by: str = setting(
        "receipt",
        choices=SPLIT_BY,
        help="Hold out whole receipts, or whole merchants (the JSONL `group` field, else the MERCHANT_NAME words), "
        "so no merchant's template is on both sides.",
    )
    val_keys: str | None = setting(
        help="FILE or s3://bucket/key of receipt ids (one per line, or a JSON list) that are the validation set."
    )
    checkpoint_metric: str = setting(
        "val_f1",
        help="Metric choosing best/ and early stopping: val_f1, one label's F1 (label_DATE_f1) "
        "or the macro F1 of labels (macro:DATE,TIME,AMOUNT).",
    )
    seed: int = setting(42, help="Seed of the split, the thinning and training.")
    example_unit: str = setting(
        "receipt",
        choices=EXAMPLE_UNITS,
        help="Whole receipts in overlapping windows, or one OCR line per example (the old tool's way).",
    )
    max_seq_length: int = setting(512, help="Sub-tokens per example window (16-512).")
    window_overlap: int | None = setting(
        help="Sub-tokens shared by windows [default: --max-seq-length // 4, resolved when the config is made]."
    )
    box_level: str = setting(
        "word",
        choices=BOX_LEVELS,
        help="Each word's own box, or its OCR line's box (the union of the line's word boxes) as layout input.",
    )
    decode: str = setting(
        "argmax",
        choices=DECODES,
        help="Word tags by argmax, or BIO-constrained Viterbi (no I-X after O or another label); "
        "used in evaluation and kept with the model for prediction.",
    )
    precision: str = setting(
        "auto",
        choices=PRECISIONS,
        help="auto: bf16 on a GPU that has it (else fp16) and on a CPU with native bf16 (AVX512-BF16, AMX-BF16, "
        "ARM BF16), else fp32. fp16 needs a GPU. See docs/benchmarks.md.",
    )
    num_workers: int = setting(0, help="Data loader worker processes.")
    save_total_limit: int = setting(2, help="Checkpoints kept (best kept too).")
    max_steps: int = setting(-1, help="Stop after this many optimiser steps (smoke tests); -1: no limit.")
    output_s3_uri: str | None = setting(
        envvar="LAYOUTLM_TRAINING_BUCKET",
        help="s3://bucket/prefix to sync run.json, checkpoints and best/ to; default: $LAYOUTLM_TRAINING_BUCKET.",
    )
    description: str = setting("", help="Free text recorded on the job.")
    priority: str = setting("medium", choices=PRIORITIES, help="Recorded on the job.")

    def __post_init__(self):
        if self.window_overlap is None:
            self.window_overlap = self.max_seq_length // 4

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f"{DEFAULT_OUTPUT_ROOT}/{self.job_name}").expanduser()


def check_config(cfg: TrainConfig) -> None:
    """Flag errors found before anything is recorded."""
    if not cfg.job_name or "/" in cfg.job_name:
        raise UserError(f"--job-name {cfg.job_name!r} must be non-empty and contain no '/'.")
    if cfg.dataset is None and not cfg.dynamo_table:
        raise UserError("No data: pass --dataset FILE.jsonl|wildreceipt:FILE|demo[:N] or --dynamo-table TABLE.")
    for f in fields(cfg):
        choices = f.metadata.get("choices")
        if choices and getattr(cfg, f.name) not in choices:
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            raise UserError(f"{flag} must be one of {', '.join(choices)}, got {getattr(cfg, f.name)!r}.")
    if cfg.epochs <= 0 or cfg.batch_size < 1 or cfg.lr <= 0 or cfg.gradient_accumulation_steps < 1:
        raise UserError("--epochs, --lr must be positive and --batch-size, --gradient-accumulation-steps at least 1.")
    if not 0 <= cfg.warmup_ratio < 1:
        raise UserError(f"--warmup-ratio must be in [0, 1), got {cfg.warmup_ratio}.")
    if not 0 <= cfg.label_smoothing < 1:
        raise UserError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}.")
    if cfg.o_entity_ratio is not None and cfg.o_entity_ratio <= 0:
        raise UserError(f"--o-entity-ratio must be positive, got {cfg.o_entity_ratio}.")
    if cfg.early_stopping_patience is not None and cfg.early_stopping_patience < 1:
        raise UserError("--early-stopping-patience must be at least 1.")
    if not 16 <= cfg.max_seq_length <= 512:
        raise UserError(f"--max-seq-length must be between 16 and 512 (LayoutLM's limit), got {cfg.max_seq_length}.")
    if not 0 <= cfg.window_overlap < cfg.max_seq_length // 2:
        raise UserError(
            f"--window-overlap must be at least 0 and under half of --max-seq-length {cfg.max_seq_length} "
            f"(at most {cfg.max_seq_length // 2 - 1}), got {cfg.window_overlap}."
        )
    if not 0 < cfg.val_ratio < 1:
        raise UserError(
            f"--val-ratio must be between 0 and 1 (exclusive), got {cfg.val_ratio}; the validation receipts "
            "choose the best epoch, so keep some (0.1 = one receipt in ten) and some to train on."
        )
    if cfg.max_steps == 0 or cfg.max_steps < -1:
        raise UserError(
            f"--max-steps must be a positive number of optimiser steps, or -1 for no limit; got {cfg.max_steps}."
        )
    if cfg.val_keys is not None and cfg.split_by != "receipt":
        raise UserError(
            f"--val-keys pins the validation receipts, so --split-by {cfg.split_by} has nothing to decide; drop one."
        )
    checkpoint_metric_labels(cfg.checkpoint_metric)
    resolve_allowed_labels(cfg.allowed_labels, cfg.merge_amounts)


def checkpoint_metric_labels(name: str) -> list[str]:
    """The labels a --checkpoint-metric scores ([] for val_f1); refuses a malformed name."""
    if name == "val_f1":
        return []
    if name.startswith("label_") and name.endswith("_f1") and len(name) > len("label__f1"):
        return [name[len("label_") : -len("_f1")]]
    if name.startswith("macro:"):
        labels = [t.strip().upper() for t in name[len("macro:") :].split(",") if t.strip()]
        if labels:
            return labels
    raise UserError(
        f"--checkpoint-metric {name!r} is not val_f1, label_<LABEL>_f1 (e.g. label_DATE_f1) "
        "or macro:<LABEL>,<LABEL>,... (e.g. macro:DATE,TIME,AMOUNT)."
    )
