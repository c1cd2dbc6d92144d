"""receipt-layoutlm: train, track and serve LayoutLM models for receipt fields."""

__version__ = "0.1.0"
__all__ = ["ReceiptTagger"]


def __getattr__(name: str):
    # Lazy: `import receipt_layoutlm` stays light (no torch) until the tagger is asked for.
    if name == "ReceiptTagger":
        from .inference.tagger import ReceiptTagger

        return ReceiptTagger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
