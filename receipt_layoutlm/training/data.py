"""Data preparation for a run: load the receipts, then apply the recipe (recipe.py).

Shared by `train`, `dataset stats` and bench/; every setting comes as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from ..labels import resolve_allowed_labels
from .recipe import TaggedReceipt, build_label_list, split_counts, split_ids, tag_receipts, thin_o_lines


@dataclass
class PreparedData:
    label_list: list[str]
    train: list[TaggedReceipt]
    val: list[TaggedReceipt]
    counts: dict
    thinning: dict
    dropped: dict


def load_source(dataset: str | None, dynamo_table: str | None, label_status=("VALID",), seed: int = 42, aws=None):
    """Receipts and the reader's report from --dataset, or from the DynamoDB table without it
    (aws: the AwsSettings saying where the table is)."""
    if dataset is not None:
        from ..sources import load_receipts

        return load_receipts(dataset, seed=seed)
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
) -> PreparedData:
    """Tags, label list, the seeded split and O-line thinning, with the counts a run records."""
    if not receipts:
        raise UserError(f"The dataset {report.source} holds no receipt with words; check the file or table.")
    allowed = resolve_allowed_labels(list(allowed_labels), merge_amounts)
    tagged, label_counts = tag_receipts(receipts, merge_amounts, allowed)
    label_list = build_label_list(tagged)
    train_ids, val_ids = split_ids([r.id for r in tagged], val_ratio, seed)
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
    return PreparedData(label_list, train, val, counts, thinning, report.dropped)
