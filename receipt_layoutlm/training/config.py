"""TrainConfig: every setting of a training run, and the checks made before anything is recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..labels import resolve_allowed_labels
from ..model import DEFAULT_PRETRAINED


@dataclass
class TrainConfig:
    job_name: str
    dataset: str | None = None  # FILE.jsonl | wildreceipt:FILE | demo[:N]; None = the DynamoDB table
    dynamo_table: str | None = None
    label_status: list[str] = field(default_factory=lambda: ["VALID"])
    output_dir: str | None = None
    pretrained: str = DEFAULT_PRETRAINED
    epochs: float = 3.0
    batch_size: int = 8
    lr: float = 5e-5
    warmup_ratio: float = 0.0
    label_smoothing: float = 0.0
    weight_decay: float = 0.01
    gradient_accumulation_steps: int = 1
    o_entity_ratio: float | None = None
    merge_amounts: bool = False
    allowed_labels: list[str] = field(default_factory=list)
    early_stopping_patience: int | None = None
    val_ratio: float = 0.1
    seed: int = 42
    example_unit: str = "receipt"
    max_seq_length: int = 512
    window_overlap: int | None = None  # None: max_seq_length // 4 (128 for 512), resolved on creation
    precision: str = "auto"
    num_workers: int = 0
    save_total_limit: int = 2
    max_steps: int = -1
    output_s3_uri: str | None = None
    description: str = ""
    priority: str = "medium"

    def __post_init__(self):
        if self.window_overlap is None:
            self.window_overlap = self.max_seq_length // 4

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f"/tmp/receipt_layoutlm/{self.job_name}").expanduser()


def check_config(cfg: TrainConfig) -> None:
    """Flag errors found before anything is recorded."""
    if not cfg.job_name or "/" in cfg.job_name:
        raise UserError(f"--job-name {cfg.job_name!r} must be non-empty and contain no '/'.")
    if cfg.dataset is None and not cfg.dynamo_table:
        raise UserError("No data: pass --dataset FILE.jsonl|wildreceipt:FILE|demo[:N] or --dynamo-table TABLE.")
    if cfg.example_unit not in ("receipt", "line"):
        raise UserError(f"--example-unit must be receipt or line, got {cfg.example_unit!r}.")
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
    if cfg.precision not in ("auto", "fp32", "fp16", "bf16"):
        raise UserError(f"--precision must be auto, fp32, fp16 or bf16, got {cfg.precision!r}.")
    resolve_allowed_labels(cfg.allowed_labels, cfg.merge_amounts)
