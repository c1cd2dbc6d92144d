"""The receipt label vocabulary: canonical names, old aliases and merges."""

from __future__ import annotations

import logging

from .errors import UserError

log = logging.getLogger(__name__)

CANONICAL_LABELS = (
    "MERCHANT_NAME",
    "STORE_HOURS",
    "PHONE_NUMBER",
    "WEBSITE",
    "LOYALTY_ID",
    "ADDRESS_LINE",
    "DATE",
    "TIME",
    "PAYMENT_METHOD",
    "COUPON",
    "DISCOUNT",
    "PRODUCT_NAME",
    "QUANTITY",
    "UNIT_PRICE",
    "LINE_TOTAL",
    "SUBTOTAL",
    "TAX",
    "TIP",
    "GRAND_TOTAL",
    "CHANGE",
    "CASH_BACK",
    "REFUND",
)
ALIASES = {
    "ADDRESS": "ADDRESS_LINE",
    "BUSINESS_NAME": "MERCHANT_NAME",
    "CARD_NUMBER": "PAYMENT_METHOD",
    "PAYMENT_TYPE": "PAYMENT_METHOD",
}
# --merge-amounts: money totals become one AMOUNT label (UNIT_PRICE stays itself).
AMOUNT_MERGE = {"LINE_TOTAL": "AMOUNT", "SUBTOTAL": "AMOUNT", "TAX": "AMOUNT", "GRAND_TOTAL": "AMOUNT"}
MERGE_TARGETS = ("AMOUNT",)
# Not receipt fields: the form labels of FUNSD (`funsd:DIR`), kept so form users can train on them.
FORM_LABELS = ("QUESTION", "ANSWER", "HEADER")
# Order in which entity types are listed (label list, reports): canonical order, merge targets, form labels.
LABEL_ORDER = {name: i for i, name in enumerate(CANONICAL_LABELS + MERGE_TARGETS + FORM_LABELS)}


def normalise_label(name: str) -> str:
    """Upper-case, map old aliases; 'O' and '' mean no label. Unknown names raise UserError."""
    key = (name or "O").strip().upper().replace(" ", "_").replace("-", "_")
    if key in ("O", ""):
        return "O"
    key = ALIASES.get(key, key)
    if key in LABEL_ORDER:
        return key
    raise UserError(
        f"Unknown label {name!r} in the data; valid labels are {', '.join(CANONICAL_LABELS)} "
        f"(aliases: {', '.join(ALIASES)}; form labels: {', '.join(FORM_LABELS)})."
    )


def resolve_allowed_labels(allowed: list[str] | None, merge_amounts: bool) -> frozenset[str] | None:
    """Check `--allowed-label` names; None means every label is kept."""
    if not allowed:
        return None
    resolved = set()
    for name in allowed:
        key = name.strip().upper()
        key = ALIASES.get(key, key)
        if key not in LABEL_ORDER:
            raise UserError(
                f"--allowed-label {name!r} is not a label; choose from {', '.join(CANONICAL_LABELS)}, "
                f"AMOUNT with --merge-amounts, or the form labels {', '.join(FORM_LABELS)}."
            )
        # Legal per the recipe, but a name that can never match deserves a warning.
        if key == "AMOUNT" and not merge_amounts:
            log.warning("--allowed-label AMOUNT has no effect without --merge-amounts")
        if merge_amounts and key in AMOUNT_MERGE:
            log.warning("--allowed-label %s has no effect with --merge-amounts (it becomes AMOUNT)", key)
        resolved.add(key)
    return frozenset(resolved)


def final_label(raw: str, merge_amounts: bool, allowed: frozenset[str] | None) -> str:
    """Raw data label -> training label: normalise, merge, then whitelist."""
    label = normalise_label(raw)
    if merge_amounts:
        label = AMOUNT_MERGE.get(label, label)
    if allowed is not None and label not in allowed:
        return "O"
    return label


def entity_types(label_list: list[str]) -> list[str]:
    """['O', 'B-DATE', 'I-DATE', ...] -> ['DATE', ...]"""
    return [t[2:] for t in label_list if t.startswith("B-")]
