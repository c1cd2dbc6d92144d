"""DynamoDB's typed attribute format, used by both stores so they hold identical items.

dict->M, list->L, str->S, bool->BOOL (tested before int), int/float->N as str(value),
None->NULL. NaN and infinities are refused. Numbers read back as int when they parse as
int, else float (docs/job-store.md).
"""

from __future__ import annotations

import math


def to_wire(value):
    if hasattr(value, "item") and not isinstance(value, (dict, list, str)):
        value = value.item()  # numpy / torch scalars
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"cannot store the number {value!r}: DynamoDB numbers must be finite")
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": {str(k): to_wire(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [to_wire(v) for v in value]}
    raise TypeError(f"cannot store a value of type {type(value).__name__}: {value!r}")


def from_wire(attr: dict):
    ((kind, value),) = attr.items()
    if kind == "NULL":
        return None
    if kind in ("S", "BOOL"):
        return value
    if kind == "N":
        try:
            return int(value)
        except ValueError:
            return float(value)
    if kind == "M":
        return {k: from_wire(v) for k, v in value.items()}
    if kind == "L":
        return [from_wire(v) for v in value]
    if kind in ("SS", "NS"):
        return [from_wire({kind[0]: v}) for v in value]
    raise ValueError(f"unsupported DynamoDB attribute type {kind}")


def item_to_wire(item: dict) -> dict:
    return {k: to_wire(v) for k, v in item.items()}


def item_from_wire(item: dict) -> dict:
    return {k: from_wire(v) for k, v in item.items()}
