"""Files a run leaves in its output directory, each written atomically (temp + rename).

<output-dir>/run.json          config, labels, dataset counts, split, epoch_metrics, summary
<output-dir>/checkpoint-<step>/ the Trainer's checkpoints (safetensors)
<output-dir>/best/             model + tokenizer + label_map.json, loadable with from_pretrained
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def replace_dir(target: Path, fill) -> None:
    """Build a directory next to `target` with fill(tmp_dir), then swap it into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        fill(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_model_dir(target: Path, model, tokenizer, label_list: list[str], extra: dict | None = None) -> None:
    """Model (safetensors), tokenizer and label map, swapped in atomically."""

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "label_map.json", {"label_list": label_list, **(extra or {})})

    replace_dir(target, fill)


def copy_checkpoint_as_best(checkpoint: Path, target: Path, tokenizer, label_list: list[str], extra: dict) -> None:
    """best/ from a saved checkpoint (used when a run stops before its normal end)."""

    def fill(tmp: Path) -> None:
        for name in ("config.json", "model.safetensors"):
            shutil.copy2(checkpoint / name, tmp / name)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "label_map.json", {"label_list": label_list, **extra})

    replace_dir(target, fill)


class RunFile:
    """run.json, rewritten whole (atomically) after every change."""

    def __init__(self, path: Path, data: dict | None = None):
        self.path = Path(path)
        self.data = data if data is not None else {}

    @classmethod
    def load(cls, path: Path) -> RunFile:
        return cls(path, json.loads(Path(path).read_text()))

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.save()

    def append(self, key: str, value) -> None:
        self.data.setdefault(key, []).append(value)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json after the weights and the
    optimizer, so a checkpoint cut short by a kill lacks it (or holds half of it): skip to the previous one."""
    ckpts = [p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for ckpt in sorted(ckpts, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return ckpt
    return None


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
