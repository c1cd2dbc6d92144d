"""Prediction latency: `ReceiptTagger` (windows of all receipts batched, grouped by length)
against calling the model on one window at a time, without batching.

Same receipts, same model (MiniLM-L6 LayoutLM by default: latency does not depend on the
weights being trained, so the untrained `load_model("minilm", labels)` is used), same windows
and merge. Each arm predicts every receipt `--repeats` times after one warm-up pass; per
receipt latency is the wall time of predicting that receipt alone (single arm) or the batch's
time shared by its receipts (batched arm, as a service answering batches sees it). Prints
receipts/s, p50/p95 ms per receipt and the ratio of receipts/s, measured in this process.

    python bench/predict_latency.py [--dataset wildreceipt:../shared/datasets/wildreceipt/receipts.jsonl]
        [--receipts 64] [--pretrained minilm] [--batch-size 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from receipt_layoutlm.inference.tagger import ReceiptTagger
from receipt_layoutlm.model import load_model
from receipt_layoutlm.sources import load_receipts
from receipt_layoutlm.training.artifacts import save_model_dir
from receipt_layoutlm.training.features import build_examples, merge_predictions
from receipt_layoutlm.training.recipe import normalize_box

LABELS = ["O"] + [f"{p}-{t}" for t in ("MERCHANT_NAME", "DATE", "TIME", "PRODUCT_NAME", "AMOUNT") for p in ("B", "I")]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_window_at_a_time(tagger: ReceiptTagger, receipt) -> list[str]:
    """The baseline: the same windows, each sent to the model alone."""
    seq = {
        "texts": [w.text for w in receipt.words],
        "boxes": [normalize_box(w.box, receipt.width, receipt.height) for w in receipt.words],
    }
    examples, windows = build_examples([seq], tagger.tokenizer, {}, tagger.max_seq_length, tagger.window_overlap)
    ids = []
    with torch.inference_mode():
        for ex in examples:
            batch = {k: torch.tensor([v]) for k, v in ex.items() if k != "labels"}
            ids.append(tagger.model(**batch).logits[0].argmax(-1).tolist())
    return merge_predictions(ids, windows, [len(receipt.words)], tagger.id2label)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wildreceipt" / "receipts.jsonl"
    parser.add_argument("--dataset", default=f"wildreceipt:{default}" if default.exists() else "demo:64")
    parser.add_argument("--receipts", type=int, default=64)
    parser.add_argument("--pretrained", default="minilm")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    receipts = load_receipts(args.dataset)[0][: args.receipts]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, model = load_model(args.pretrained, LABELS)
        save_model_dir(Path(tmp) / "best", model, tokenizer, LABELS, {"max_seq_length": 512, "window_overlap": 128})
        tagger = ReceiptTagger.from_pretrained(Path(tmp) / "best", batch_size=args.batch_size, device="cpu")
    words = sum(len(r.words) for r in receipts)
    print(
        f"{len(receipts)} receipts from {args.dataset}, {words} words; {args.pretrained}; CPU, "
        f"{torch.get_num_threads()} threads; batch size {args.batch_size}"
    )

    # Same labels both ways: the baseline is the same computation, only unbatched.
    batched_tags = [p.tags for p in tagger.predict_receipts(receipts)]
    single_tags = [one_window_at_a_time(tagger, r) for r in receipts]
    agree = sum(a == b for x, y in zip(batched_tags, single_tags) for a, b in zip(x, y)) / words
    print(f"word labels identical in both arms: {agree:.2%}")

    results = {}
    for arm in ("one window at a time", "ReceiptTagger (batched)"):
        per_receipt, total = [], 0.0
        for _ in range(args.repeats):
            if arm.startswith("one"):
                for r in receipts:
                    t0 = time.perf_counter()
                    one_window_at_a_time(tagger, r)
                    per_receipt.append(time.perf_counter() - t0)
                    total += per_receipt[-1]
            else:
                for k in range(0, len(receipts), args.batch_size):
                    group = receipts[k : k + args.batch_size]
                    t0 = time.perf_counter()
                    tagger.predict_receipts(group)
                    elapsed = time.perf_counter() - t0
                    per_receipt += [elapsed / len(group)] * len(group)
                    total += elapsed
        results[arm] = (len(receipts) * args.repeats / total, per_receipt)
    base = results["one window at a time"][0]
    print("| arm | receipts/s | p50 ms/receipt | p95 ms/receipt | ratio |\n|---|---|---|---|---|")
    for arm, (rate, lat) in results.items():
        print(
            f"| {arm} | {rate:.2f} | {1000 * statistics.median(lat):.0f} | {1000 * percentile(lat, 0.95):.0f} | "
            f"{rate / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
