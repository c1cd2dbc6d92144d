"""receipt-layoutlm: train, track and serve LayoutLM models for receipt fields."""

__version__ = "0.1.0"
