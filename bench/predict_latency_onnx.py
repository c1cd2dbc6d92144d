"""Prediction latency per receipt on the CPU: PyTorch eager against ONNX Runtime fp32 and int8.

One trained model (a run's best/), exported here to ONNX (fp32 + dynamic int8) in a temp
folder. Receipts: the run's validation receipts (run.json beside best/), so the F1 of
each arm is measured on data the model did not train on. Each arm labels one receipt at a
time (all its windows in one batch, as a service would), after one untimed warm-up pass;
arms alternate for --repeats rounds and the p50 of all per-receipt times is reported, with
the entity F1 of the arm's labels. Threads: --threads for both torch and onnxruntime.

    python bench/predict_latency_onnx.py --model RUN/best --dataset wildreceipt:FILE [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from receipt_layoutlm.inference.onnx import OnnxTokenClassifier, export_onnx
from receipt_layoutlm.inference.words import load_model_dir
from receipt_layoutlm.labels import entity_types, resolve_allowed_labels
from receipt_layoutlm.metrics import entity_scores
from receipt_layoutlm.sources import load_receipts
from receipt_layoutlm.training.features import build_examples, merge_predictions, sequences
from receipt_layoutlm.training.recipe import tag_receipts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path, help="A run's best/ folder (run.json one level up).")
    ap.add_argument("--dataset", required=True, help="The run's --dataset (to find its validation receipts).")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    settings = json.loads((args.model / "label_map.json").read_text())
    val_ids = set(json.loads((args.model.parent / "run.json").read_text())["split"]["val_receipt_ids"])
    receipts = [r for r in load_receipts(args.dataset)[0] if r.id in val_ids]
    merge = settings.get("merge_amounts", False)
    tagged, _ = tag_receipts(receipts, merge, resolve_allowed_labels(settings.get("allowed_labels"), merge))
    seqs = sequences(tagged, "receipt")

    out = Path(tempfile.mkdtemp(prefix="onnx-bench-")) / "export"
    started = time.perf_counter()
    export_onnx(args.model, out, "int8")
    print(f"export (fp32 + int8): {time.perf_counter() - started:.1f} s")
    arms = {
        "pytorch eager": load_model_dir(args.model, batch_size=64),
        "onnx fp32": load_model_dir(out, "fp32", batch_size=64),
        "onnx int8": load_model_dir(out, "int8", batch_size=64),
    }
    for name in ("onnx fp32", "onnx int8"):  # sessions with the same thread count as torch
        arms[name].runner = OnnxTokenClassifier(out, name.split()[1], threads=args.threads)

    loaded0 = arms["pytorch eager"]
    label2id = {v: k for k, v in loaded0.id2label.items()}
    per_receipt = []  # (examples, windows) of each receipt: one receipt = one call
    for s in seqs:
        safe = {t: label2id.get(t, 0) for t in s["tags"]}
        per_receipt.append(
            build_examples(
                [s], loaded0.tokenizer, safe, settings.get("max_seq_length", 512), settings.get("window_overlap", 128)
            )
        )

    times = {name: [] for name in arms}
    preds = {}
    for name, loaded in arms.items():  # warm-up, and the labels the F1 is computed from
        preds[name] = [
            merge_predictions(loaded.score_examples(ex)[0], win, [len(s["texts"])], loaded.id2label)[0]
            for s, (ex, win) in zip(seqs, per_receipt)
        ]
    for _ in range(args.repeats):
        for name, loaded in arms.items():
            for ex, _win in per_receipt:
                t0 = time.perf_counter()
                loaded.score_examples(ex)[0]
                times[name].append((time.perf_counter() - t0) * 1000)

    truth = [s["tags"] for s in seqs]
    types = entity_types(list(loaded0.id2label.values()))
    eager_p50 = statistics.median(times["pytorch eager"])
    words = sum(len(s["texts"]) for s in seqs)
    print(f"{len(seqs)} validation receipts ({words} words), {args.threads} threads, {args.repeats} rounds")
    print(f"{'arm':<15} {'p50 ms/receipt':>15} {'p90':>8} {'speed-up':>9} {'entity F1':>10} {'words = eager':>14}")
    for name in arms:
        p50 = statistics.median(times[name])
        p90 = statistics.quantiles(times[name], n=10)[-1]
        f1 = entity_scores(truth, preds[name], types)["f1"]
        agree = sum(a == b for pa, pb in zip(preds[name], preds["pytorch eager"]) for a, b in zip(pa, pb)) / words
        print(f"{name:<15} {p50:>15.1f} {p90:>8.1f} {eager_p50 / p50:>8.2f}x {f1:>10.4f} {agree:>13.2%}")


if __name__ == "__main__":
    main()
