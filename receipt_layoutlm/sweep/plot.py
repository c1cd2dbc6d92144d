"""`sweep show --plot DIR`: val F1 against each parameter, one PNG per parameter (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path


def plot_sweep(rows: list[dict], out: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = [r for r in rows if r["status"] == "succeeded" and isinstance(r["best_f1"], (int, float))]
    written = []
    for name in sorted({k for r in done for k in r["params"]}):
        values = [r["params"].get(name) for r in done]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        xs = values if numeric else [str("off" if v is None else v) for v in values]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.scatter(xs, [r["best_f1"] for r in done])
        if numeric and name == "lr":
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("best val F1")
        ax.set_title(f"{name} ({len(done)} trials)")
        fig.tight_layout()
        path = out / f"f1_vs_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
