"""Training throughput: our batching against the old tool's pad-everything-to-512.

Same data (seeded demo receipts, or --dataset), same model, same number of real tokens
seen; each arm runs forward + backward + optimizer step on CPU or GPU. Arms:
  line/512       one OCR line per example, padded to 512 (the old tool)
  line/dynamic   one line per example, padded to the batch's longest, length-grouped
  receipt/512    whole-receipt windows, padded to 512
  receipt/dynamic whole-receipt windows, padded to the batch's longest, length-grouped (ours)
Prints examples/s and real (non-padding) tokens/s per arm, and the ratio of real tokens/s
of ours to the old tool's, measured in this one process.

    python bench/train_throughput.py [--dataset demo:120] [--pretrained minilm] [--batch-size 8] [--seconds 40]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from receipt_layoutlm.model import load_model
from receipt_layoutlm.training.collate import pad_batch
from receipt_layoutlm.training.data import load_source, prepare_data
from receipt_layoutlm.training.features import build_examples, sequences


def batches(examples, batch_size, pad_to_512, seed):
    """Length-grouped batches for dynamic padding (like the Trainer's sampler), random otherwise."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    if not pad_to_512:
        # group by length in chunks of 50 batches, as LengthGroupedSampler does
        chunk = batch_size * 50
        order = [
            i
            for k in range(0, len(order), chunk)
            for i in sorted(order[k : k + chunk], key=lambda i: -len(examples[i]["input_ids"]))
        ]
    for k in range(0, len(order), batch_size):
        yield [examples[i] for i in order[k : k + batch_size]]


def run_arm(model, examples, batch_size, pad_to_512, seconds, device):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    n_examples = real_tokens = padded_tokens = 0
    start = None
    for step, group in enumerate(batches(examples * 100, batch_size, pad_to_512, seed=0)):
        batch = pad_batch(group, multiple_of=512 if pad_to_512 else None)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step == 0:  # the first step warms up kernels and allocators; not timed
            start = time.perf_counter()
            continue
        n_examples += len(group)
        real_tokens += int(batch["attention_mask"].sum())
        padded_tokens += batch["input_ids"].numel()
        if time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    return {
        "examples_s": n_examples / elapsed,
        "tokens_s": real_tokens / elapsed,
        "padding": 1 - real_tokens / padded_tokens,
        "steps": step,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="demo:120")
    ap.add_argument("--pretrained", default="minilm")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=40, help="timed seconds per arm")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    data = prepare_data(*load_source(args.dataset, None), merge_amounts=True)
    label2id = {t: i for i, t in enumerate(data.label_list)}
    tokenizer, model = load_model(args.pretrained, data.label_list)
    model.to(device)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for unit in ("line", "receipt"):
        examples, _ = build_examples(sequences(data.train, unit), tokenizer, label2id, 512, 128)
        for pad in (True, False):
            model.load_state_dict(initial)
            name = f"{unit}/{'512' if pad else 'dynamic'}"
            results[name] = r = run_arm(model, examples, args.batch_size, pad, args.seconds, device)
            print(
                f"{name:16s} {r['examples_s']:8.2f} examples/s {r['tokens_s']:9.0f} real tokens/s "
                f"padding {100 * r['padding']:5.1f}%  ({r['steps']} steps, {len(examples)} examples)",
                flush=True,
            )
    base = results["line/512"]["tokens_s"]
    print(f"\ndevice {device}, model {args.pretrained}, batch {args.batch_size}, data {args.dataset}")
    for name, r in results.items():
        print(f"{name:16s} real tokens/s ratio vs line/512 (old tool): {r['tokens_s'] / base:6.2f}x")


if __name__ == "__main__":
    main()
