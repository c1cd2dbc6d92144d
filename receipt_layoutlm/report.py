"""A job as pictures: `jobs report JOB -o DIR` writes DIR/index.html, one self-contained page
(inline CSS, images as data URIs: it opens without a network or the PNGs beside it), and the
same curves as PNG files.

Pictures: validation entity P/R/F1, train and eval loss, learning rate (all over steps),
per-label F1 over epochs, and an overview (scores, losses, per-label F1 at the best step).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

FIGSIZE, DPI = (8, 4.5), 100  # every curve PNG is 800x450 pixels
CURVES = {
    "scores.png": ("validation entity scores", ("val_f1", "val_precision", "val_recall"), "step"),
    "loss.png": ("loss", ("train_loss", "eval_loss"), "step"),
    "learning_rate.png": ("learning rate", ("learning_rate",), "step"),
}


def _series(metrics: list[dict], x: str = "step") -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for m in metrics:
        if isinstance(m.get("value"), (int, float)) and m.get(x) is not None:
            out.setdefault(m["metric_name"], []).append((m[x], m["value"]))
    return {k: sorted(v) for k, v in out.items()}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)
    return path


def plot_curves(metrics: list[dict], out_dir: Path) -> dict[str, Path]:
    """The curve PNGs that have data, by file name."""
    plt = _plt()
    by_step, by_epoch = _series(metrics), _series(metrics, "epoch")
    written = {}
    for filename, (title, names, xlabel) in CURVES.items():
        present = [n for n in names if n in by_step]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=FIGSIZE)
        for n in present:
            x, y = zip(*by_step[n])
            ax.plot(x, y, marker="." if n == "train_loss" else "o", label=n)
        ax.set(title=title, xlabel=xlabel)
        if filename == "scores.png":
            ax.set_ylim(0, 1)
        ax.legend()
        fig.tight_layout()
        written[filename] = _save(fig, out_dir / filename)
    per_label = {n[6:-3]: by_epoch[n] for n in sorted(by_epoch) if n.startswith("label_") and n.endswith("_f1")}
    if per_label:
        fig, ax = plt.subplots(figsize=FIGSIZE)
        for name, points in per_label.items():
            x, y = zip(*points)
            ax.plot(x, y, marker="o", label=name)
        ax.set(title="F1 per label", xlabel="epoch", ylim=(0, 1))
        ax.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        written["per_label_f1.png"] = _save(fig, out_dir / "per_label_f1.png")
    return written


def plot_job(job, metrics: list[dict], output: Path) -> Path:
    """One overview picture: scores and losses over training, per-label F1 at the best evaluation."""
    plt = _plt()
    series = _series(metrics)
    fig, (scores, losses, labels) = plt.subplots(1, 3, figsize=(16, 4.5))
    for name in ("val_f1", "val_precision", "val_recall"):
        if name in series:
            x, y = zip(*series[name])
            scores.plot(x, y, marker="o", label=name)
    scores.set(title="validation (entity level)", xlabel="step", ylim=(0, 1))
    for name in ("train_loss", "eval_loss"):
        if name in series:
            x, y = zip(*series[name])
            losses.plot(x, y, marker="." if name == "train_loss" else "o", label=name)
    losses.set(title="loss", xlabel="step")
    for ax in (scores, losses):
        if ax.lines:
            ax.legend()
    # A finished job names its best step; a running one is shown at its best evaluation so far.
    best_f1, best_step = max(((v, x) for x, v in series.get("val_f1", [])), default=(None, None))
    best_step = job.results.get("best_step", best_step)
    per_label = {
        name[6:-3]: dict(points).get(best_step)
        for name, points in series.items()
        if name.startswith("label_") and name.endswith("_f1")
    }
    per_label = {k: v for k, v in per_label.items() if v is not None}
    if per_label:
        names = list(per_label)
        labels.barh(names, [per_label[n] for n in names])
        labels.set(xlim=(0, 1), title=f"F1 per label at step {best_step}")
    fig.suptitle(
        f"{job.name} ({job.job_id[:8]}), {job.status}, best val F1 {job.results.get('best_f1', best_f1 or 0):.4f}"
    )
    fig.tight_layout()
    return _save(fig, Path(output))


def _table(rows, header=None) -> str:
    e = html.escape
    head = "<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return "" if v is None else str(v)


def confusion_section(metrics: list[dict]) -> str:
    """The final confusion matrix, when the job recorded one (metric `confusion_matrix`, unit `matrix`)."""
    rows = [m for m in metrics if m["metric_name"] == "confusion_matrix"]
    if not rows:
        return (
            "<p>This job recorded no confusion matrix. <code>layoutlm-cli evaluate --model JOB --dataset "
            "FILE</code> computes one for its best model on labelled receipts.</p>"
        )
    value = rows[-1]["value"]
    data = json.loads(value) if isinstance(value, str) else value
    names = data["labels"]
    return _table([[n, *row] for n, row in zip(names, data["matrix"])], ["reference \\ predicted", *names])


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0} img{max-width:100%;border:1px solid #ddd;margin:.5rem 0}
table{border-collapse:collapse;margin:.5rem 0 1.5rem} td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
th{background:#f3f3f3} .grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem} code{background:#f3f3f3}
"""


def write_report(job, metrics: list[dict], status_history: list[dict], out_dir: Path) -> Path:
    """DIR/index.html (self-contained) and the PNGs; returns the page's path."""
    out_dir = Path(out_dir)
    pngs = plot_curves(metrics, out_dir)
    pngs["overview.png"] = plot_job(job, metrics, out_dir / "overview.png")
    e = html.escape

    def img(name: str) -> str:
        if name not in pngs:
            return ""
        data = base64.b64encode(pngs[name].read_bytes()).decode()
        return f'<img alt="{e(name)}" src="data:image/png;base64,{data}">'

    r = job.results or {}
    best = (
        f"best val F1 {r['best_f1']:.4f} at epoch {r.get('best_epoch')} (step {r.get('best_step')})"
        if isinstance(r.get("best_f1"), (int, float))
        else "no best model yet"
    )
    latest: dict[str, object] = {}
    for m in metrics:
        if m["metric_name"].startswith("dataset_"):
            latest[m["metric_name"].removeprefix("dataset_")] = m["value"]
    sections = [
        f"<h1>{e(job.name)}</h1>",
        f'<p class="sub">job {e(job.job_id)} · {e(job.status)} · created {e(job.created_at)} by '
        f"{e(job.created_by)} · {e(best)}</p>",
        "<h2>Learning curves</h2>",
        '<div class="grid">' + "".join(img(n) for n in ("scores.png", "loss.png", "learning_rate.png")) + "</div>",
        "<h2>F1 per label</h2>",
        img("per_label_f1.png") or "<p>No per-label scores recorded.</p>",
        "<h2>Overview</h2>",
        img("overview.png"),
        "<h2>Confusion matrix</h2>",
        confusion_section(metrics),
        "<h2>Dataset</h2>",
        _table([[k, _value(v)] for k, v in latest.items()], ["count", "value"]) if latest else "<p>none recorded</p>",
        "<h2>Results</h2>",
        _table([[k, _value(v)] for k, v in r.items()], ["result", "value"]) if r else "<p>none yet</p>",
        "<h2>Configuration</h2>",
        _table([[k, _value(v)] for k, v in sorted((job.job_config or {}).items())], ["setting", "value"]),
        "<h2>Status history</h2>",
        _table(
            [[s.get("updated_at", ""), s.get("status", ""), s.get("message", "")] for s in status_history],
            ["time", "status", "message"],
        ),
    ]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(job.name)} · receipt-layoutlm'
        f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    from .training.artifacts import atomic_write_text

    index = out_dir / "index.html"
    atomic_write_text(index, page)
    return index
