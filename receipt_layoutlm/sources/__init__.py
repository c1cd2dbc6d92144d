"""The receipt sources: one reader per format behind `load_receipts(spec)`.

Every source yields the same thing: a list of `Receipt` (receipt.py), each with its page
size and its words in reading order. Recipe steps (label merges, tagging, splits) live in
training/recipe.py.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .receipt import LoadReport, Receipt, Word

__all__ = ["LoadReport", "Receipt", "Word", "load_receipts"]


def load_receipts(spec: str, seed: int = 42, aws=None) -> tuple[list[Receipt], LoadReport]:
    """Resolve a `--dataset` value: `FILE.jsonl`, `s3://bucket/key.jsonl` (aws: the AwsSettings saying where
    S3 is), `wildreceipt:FILE`, `sroie:DIR`, `cord:DIR`, `funsd:DIR` or `demo[:N]`."""
    if spec.startswith("s3://"):
        from .jsonl import read_jsonl_s3

        return read_jsonl_s3(spec, aws)
    if spec == "demo" or spec.startswith("demo:"):
        from .demo import generate_receipts

        n_text = spec.partition(":")[2] or "300"
        if not n_text.isdigit() or int(n_text) < 1:
            raise UserError(f"--dataset {spec!r}: the demo size must be a positive integer, e.g. demo:300.")
        return generate_receipts(int(n_text), seed=seed), LoadReport(source=spec)
    if spec.startswith("wildreceipt:"):
        from .wildreceipt import read_wildreceipt

        return read_wildreceipt(Path(spec.partition(":")[2]))
    if spec.startswith("sroie:"):
        from .sroie import read_sroie

        return read_sroie(Path(spec.partition(":")[2]))
    if spec.startswith("cord:"):
        from .cord import read_cord

        return read_cord(Path(spec.partition(":")[2]))
    if spec.startswith("funsd:"):
        from .funsd import read_funsd

        return read_funsd(Path(spec.partition(":")[2]))
    from .jsonl import read_jsonl

    return read_jsonl(Path(spec))
