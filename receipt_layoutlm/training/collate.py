"""Dynamic padding: each batch is padded to its own longest example, never to 512."""

from __future__ import annotations

import torch

from .features import IGNORE


def pad_batch(examples: list[dict], pad_token_id: int = 0, multiple_of: int | None = None) -> dict:
    longest = max(len(e["input_ids"]) for e in examples)
    if multiple_of:
        longest = -(-longest // multiple_of) * multiple_of
    batch = {}
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE, "bbox": [0, 0, 0, 0]}
    for key in examples[0]:
        rows = [e[key] + [fill[key]] * (longest - len(e[key])) for e in examples]
        batch[key] = torch.tensor(rows, dtype=torch.long)
    return batch


class Collator:
    """Picklable collator for the Trainer (works with multi-worker loading)."""

    def __init__(self, pad_token_id: int = 0, multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.multiple_of = multiple_of

    def __call__(self, examples: list[dict]) -> dict:
        return pad_batch(examples, self.pad_token_id, self.multiple_of)
