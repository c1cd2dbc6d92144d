"""A picture of a job: validation scores and losses over training, per-label F1 at the best evaluation."""

from __future__ import annotations

from pathlib import Path


def plot_job(job, metrics: list[dict], output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for m in metrics:
        if isinstance(m.get("value"), (int, float)) and m.get("step") is not None:
            series.setdefault(m["metric_name"], []).append((m["step"], m["value"]))
    fig, (scores, losses, labels) = plt.subplots(1, 3, figsize=(16, 4.5))
    for name in ("val_f1", "val_precision", "val_recall"):
        if name in series:
            x, y = zip(*series[name])
            scores.plot(x, y, marker="o", label=name)
    scores.set(title="validation (entity level)", xlabel="step", ylim=(0, 1))
    scores.legend()
    for name in ("train_loss", "eval_loss"):
        if name in series:
            x, y = zip(*series[name])
            losses.plot(x, y, marker="." if name == "train_loss" else "o", label=name)
    losses.set(title="loss", xlabel="step")
    losses.legend()
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
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
