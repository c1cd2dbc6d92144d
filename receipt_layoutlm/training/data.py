"""Data preparation for a run: load the receipts, then apply the recipe (recipe.py).

Shared by `train`, `dataset stats` and bench/; every setting comes as an argument.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..labels import entity_types, resolve_allowed_labels
from .recipe import (
    TaggedReceipt,
    build_label_list,
    merchant_group,
    split_counts,
    split_groups,
    tag_receipts,
    thin_o_lines,
)


@dataclass
class PreparedData:
    label_list: list[str]
    train: list[TaggedReceipt]
    val: list[TaggedReceipt]
    counts: dict
    thinning: dict
    dropped: dict
    split: dict  # how the validation receipts were chosen (recorded in run.json and the job_config)


@dataclass
class ValKeys:
    """--val-keys: the receipt ids that are the validation set, where they came from and their hash."""

    source: str
    ids: list[str]

    @property
    def sha256(self) -> str:
        """Of the sorted unique ids, one per line: the same keys give the same hash whatever the file's format."""
        return hashlib.sha256("\n".join(sorted(set(self.ids))).encode()).hexdigest()


def parse_val_keys(text: str, source: str) -> ValKeys:
    """A JSON list of ids, or one id per line (blank lines ignored)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            ids = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise UserError(
                f"--val-keys {source}: bad JSON list ({e.msg}); write a JSON list or one id per line."
            ) from None
        if not all(isinstance(i, str) and i for i in ids):
            raise UserError(f"--val-keys {source}: the JSON list must hold receipt ids as non-empty strings.")
    else:
        ids = [line.strip() for line in stripped.splitlines() if line.strip()]
    if not ids:
        raise UserError(f"--val-keys {source} holds no receipt id; write one id per line or a JSON list.")
    return ValKeys(source, ids)


def read_val_keys(ref: str, aws=None) -> ValKeys:
    """--val-keys FILE or s3://bucket/key (aws: the AwsSettings saying where S3 is)."""
    if ref.startswith("s3://"):
        from ..s3 import read_object

        body = read_object(ref, "--val-keys", aws)
    else:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise UserError(f"--val-keys {ref}: no such file; pass a file of receipt ids or s3://bucket/key.")
        body = path.read_bytes()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"--val-keys {ref} is not UTF-8 text; write one receipt id per line.") from None
    return parse_val_keys(text, ref)


def load_source(dataset: str | None, dynamo_table: str | None, label_status=("VALID",), seed: int = 42, aws=None):
    """Receipts and the reader's report from --dataset, or from the DynamoDB table without it
    (aws: the AwsSettings saying where the table is)."""
    if dataset is not None:
        from ..sources import load_receipts

        return load_receipts(dataset, seed=seed, aws=aws)
    from ..sources.dynamodb import load_dynamo_receipts

    return load_dynamo_receipts(dynamo_table, aws, statuses=tuple(label_status))


def prepare_data(
    receipts,
    report,
    *,
    merge_amounts: bool = False,
    allowed_labels=(),
    val_ratio: float = 0.1,
    o_entity_ratio: float | None = None,
    seed: int = 42,
    split_by: str = "receipt",
    val_keys: ValKeys | None = None,
) -> PreparedData:
    """Tags, label list, the split (seeded by receipt or merchant, or pinned by val_keys) and O-line
    thinning, with the counts a run records."""
    if not receipts:
        raise UserError(f"The dataset {report.source} holds no receipt with words; check the file or table.")
    allowed = resolve_allowed_labels(list(allowed_labels), merge_amounts)
    tagged, label_counts = tag_receipts(receipts, merge_amounts, allowed)
    label_list = build_label_list(tagged)
    split, val_ids = choose_split(receipts, val_ratio, seed, split_by, val_keys)
    val_set = set(val_ids)
    train = [r for r in tagged if r.id not in val_set]
    val = [r for r in tagged if r.id in val_set]
    thinning = thin_o_lines(train, o_entity_ratio, seed)
    counts = {
        "receipts": len(tagged),
        **label_counts,
        "train": split_counts(train),
        "val": split_counts(val),
        "val_receipt_ids": val_ids,
    }
    return PreparedData(label_list, train, val, counts, thinning, report.dropped, split)


def prepare_config_data(cfg, aws=None) -> tuple[PreparedData, object]:
    """A TrainConfig's data, read and prepared as its run will prepare it: (PreparedData, the reader's
    report). `train`, `submit` and `dataset stats` all go through here, so they agree."""
    receipts, report = load_source(cfg.dataset, cfg.dynamo_table, cfg.label_status, cfg.seed, aws)
    data = prepare_data(
        receipts,
        report,
        merge_amounts=cfg.merge_amounts,
        allowed_labels=cfg.allowed_labels,
        val_ratio=cfg.val_ratio,
        o_entity_ratio=cfg.o_entity_ratio,
        seed=cfg.seed,
        split_by=cfg.split_by,
        val_keys=read_val_keys(cfg.val_keys, aws) if cfg.val_keys else None,
    )
    check_metric_labels(cfg.checkpoint_metric, data.label_list)
    return data, report


def check_metric_labels(name: str, label_list: list[str]) -> None:
    """A --checkpoint-metric may only name labels this run learns."""
    from .config import checkpoint_metric_labels

    known = entity_types(label_list)
    missing = [t for t in checkpoint_metric_labels(name) if t not in known]
    if missing:
        raise UserError(
            f"--checkpoint-metric {name} names {', '.join(missing)}, which this run does not learn "
            f"(its labels: {', '.join(known)}); name one of those."
        )


def choose_split(receipts, val_ratio: float, seed: int, split_by: str, val_keys: ValKeys | None):
    """(what run.json records about the split, the validation receipt ids)."""
    ids = [r.id for r in receipts]
    if val_keys is not None:
        known = set(ids)
        keys = set(val_keys.ids)
        val_ids = [i for i in ids if i in keys]
        if not val_ids:
            raise UserError(
                f"None of the {len(keys)} receipt ids in --val-keys {val_keys.source} is in the dataset; "
                "check that the keys and --dataset belong together."
            )
        if len(val_ids) == len(ids):
            raise UserError(f"--val-keys {val_keys.source} holds every receipt of the dataset; leave some to train on.")
        split = {
            "by": "val_keys",
            "rule": "the receipts listed in --val-keys",
            "val_keys": val_keys.source,
            "val_keys_sha256": val_keys.sha256,
            "val_keys_count": len(keys),
            "val_keys_not_in_data": len(keys - known),
        }
        return split, val_ids
    group_of = {r.id: (merchant_group(r) if split_by == "merchant" else r.id) for r in receipts}
    _, val_ids = split_groups(ids, group_of, val_ratio, seed)
    val_groups = {group_of[i] for i in val_ids}
    split = {
        "by": split_by,
        "seed": seed,
        "val_ratio": val_ratio,
        "rule": f"sha256(seed, {'merchant group' if split_by == 'merchant' else 'receipt id'}) < val_ratio",
        "groups": {"train": len(set(group_of.values()) - val_groups), "val": len(val_groups)},
    }
    if split_by == "merchant":
        split["groups_without_merchant"] = sum(g.startswith("receipt:") for g in set(group_of.values()))
    return split, val_ids
