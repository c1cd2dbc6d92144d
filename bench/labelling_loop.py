"""A simulated labelling loop on WildReceipt: does `suggest --by uncertainty` beat random choice?

The receipts are shuffled once (seed); a fixed held-out part scores every model. The
loop starts from --start labelled receipts and, each round, trains a model on the
labelled ones (the normal training flow, `layoutlm-cli train`, same recipe and seed),
scores it on the held-out part (entity F1, as `layoutlm-cli predict` computes it), then
"labels" --step more receipts of the pool, chosen by suggest's ranking (mean word
entropy with the per-merchant guard) or at random (seeded). Both arms share round 0.
Writes a JSON of the curves and a plot.

    python bench/labelling_loop.py --dataset wildreceipt:FILE [--pretrained tiny] [--rounds 3] [--out docs/img]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from click.testing import CliRunner

from receipt_layoutlm.cli import cli
from receipt_layoutlm.inference.predict import predict_receipts
from receipt_layoutlm.inference.suggest import rank_by_uncertainty, rank_randomly
from receipt_layoutlm.inference.words import load_model_dir, predict_words
from receipt_layoutlm.sources import load_receipts
from receipt_layoutlm.sources.jsonl import write_jsonl


def train(receipts, work: Path, name: str, args) -> Path:
    data = work / f"{name}.jsonl"
    write_jsonl(receipts, data)
    argv = ["train", "--job-name", name, "--dataset", str(data), "--pretrained", args.pretrained]
    argv += ["--epochs", str(args.epochs), "--lr", str(args.lr), "--batch-size", "8", "--merge-amounts"]
    argv += ["--max-seq-length", "128", "--window-overlap", "32", "--seed", str(args.seed)]
    argv += ["--output-dir", str(work / name), "--job-store", f"sqlite:///{work / 'jobs.db'}"]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return work / name / "best"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--pretrained", default="tiny")
    ap.add_argument("--start", type=int, default=60)
    ap.add_argument("--step", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--held-out", type=int, default=72)
    ap.add_argument("--epochs", type=float, default=6)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    args = ap.parse_args()

    receipts, _ = load_receipts(args.dataset)
    receipts = sorted(receipts, key=lambda r: r.id)
    random.Random(args.seed).shuffle(receipts)
    held_out, pool = receipts[: args.held_out], receipts[args.held_out :]
    work = Path(tempfile.mkdtemp(prefix="labelling-loop-"))
    write_jsonl(held_out, work / "held_out.jsonl")
    by_id = {r.id: r for r in pool}
    start = [r.id for r in pool[: args.start]]
    curves = {}
    for arm in ("uncertainty", "random"):
        labelled, points = list(start), []
        for round_ in range(args.rounds + 1):
            best = train([by_id[i] for i in labelled], work, f"{arm}-{round_}", args)
            f1 = predict_receipts(best, str(work / "held_out.jsonl"))["f1"]
            points.append({"labelled": len(labelled), "f1": round(f1, 4)})
            print(
                f"{arm:<12} round {round_}: {len(labelled)} labelled receipts, held-out entity F1 {f1:.4f}", flush=True
            )
            if round_ == args.rounds:
                break
            rest = [r for r in pool if r.id not in set(labelled)]
            if arm == "uncertainty":
                picked = rank_by_uncertainty(rest, predict_words(load_model_dir(best), rest), args.step)
            else:
                picked = rank_randomly([r.id for r in rest], args.step, args.seed + round_)
            labelled += [p["receipt"] for p in picked]
        curves[arm] = points

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labelling_loop.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, **curves}))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for arm, points in curves.items():
        ax.plot([p["labelled"] for p in points], [p["f1"] for p in points], marker="o", label=f"suggest --by {arm}")
    ax.set_xlabel("labelled receipts")
    ax.set_ylabel(f"held-out entity F1 ({args.held_out} receipts)")
    ax.set_title(f"Simulated labelling loop, WildReceipt, {args.pretrained} model")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "labelling_loop.png", dpi=120)
    print(f"-> {args.out / 'labelling_loop.png'}")


if __name__ == "__main__":
    main()
