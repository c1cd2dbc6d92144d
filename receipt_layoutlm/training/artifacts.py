"""Files a run leaves in its output directory, each written atomically (temp + rename).

<output-dir>/run.json          config, labels, dataset counts, split, epoch_metrics, summary
<output-dir>/checkpoint-<step>/ the Trainer's checkpoints (safetensors)
<output-dir>/best/             model + tokenizer + label_map.json, loadable with from_pretrained
<output-dir>/.claim            while a run works in the directory: its pid, host and job name

Files and folders get the modes the umask gives (0644/0755 with umask 022), so a model
directory can be shared and served; mkstemp/mkdtemp alone would make them private.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from ..errors import UserError


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask only swaps)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600
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
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
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
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(
                f"{path} cannot be read as a run record ({e}); restore it from a copy, "
                "or start afresh with --overwrite-output-dir."
            ) from None
        if not isinstance(data, dict):
            raise UserError(
                f"{path} holds {type(data).__name__}, not a run record (a JSON object); restore it from a copy, "
                "or start afresh with --overwrite-output-dir."
            )
        return cls(path, data)

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


CLAIM_FILE = ".claim"


class OutputDirClaim:
    """<output-dir>/.claim, created with O_EXCL: only one run at a time works in a directory.

    Two runs started together with the same --job-name would otherwise both pass the
    "directory is empty" check and write one best/. The claim holds pid, host and job name;
    it is removed when the run ends, so a later --resume finds the directory free. A claim
    left by a killed process on this host is taken over; one from another host is reported.
    """

    def __init__(self, out: Path, job_name: str):
        self.out, self.path = Path(out), Path(out) / CLAIM_FILE
        self.mine = {"pid": os.getpid(), "host": socket.gethostname(), "job_name": job_name, "since": time.time()}
        self.held = self.created = False

    def acquire(self) -> OutputDirClaim:
        out = self.out
        if out.exists() and not out.is_dir():
            raise UserError(f"--output-dir {out} is a file, not a directory; pass a directory path.")
        self.created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"Cannot create the output directory {out} ({e.strerror}); pass a writable --output-dir."
            ) from None
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = self._read(self.path)
                if not self._stale(holder):
                    raise UserError(self._in_use(holder)) from None
                self._take_over(holder)
                continue
            except OSError as e:
                raise UserError(
                    f"Cannot write into the output directory {out} ({e.strerror}); pass a writable --output-dir."
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.mine, f)
            self.held = True
            return self
        raise UserError(self._in_use(self._read(self.path)))

    def release(self) -> None:
        if self.held and self._read(self.path) == self.mine:
            self.path.unlink(missing_ok=True)
            if self.created:  # a run refused before writing anything leaves no empty directory
                with contextlib.suppress(OSError):
                    self.out.rmdir()
        self.held = False

    @staticmethod
    def _read(path: Path) -> dict | None:
        """The claim's content; None while its writer has not finished writing it (or it is gone)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _stale(self, holder: dict | None) -> bool:
        """A claim is stale when its process, on this host, no longer exists."""
        if holder is None or holder.get("host") != self.mine["host"] or not isinstance(holder.get("pid"), int):
            return False
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _take_over(self, stale: dict) -> None:
        """Move the stale claim aside (atomic rename); if what moved is not the stale claim
        (another run claimed in between), put it back."""
        aside = self.path.with_name(f"{CLAIM_FILE}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if self._read(aside) != stale:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def _in_use(self, holder: dict | None) -> str:
        if holder is None:
            who = "another run (its claim is being written or unreadable)"
        else:
            who = f"job {holder.get('job_name')!r} (pid {holder.get('pid')} on {holder.get('host')})"
        return (
            f"Output directory {self.out} is in use by {who}; wait for it to end or pass another --output-dir "
            f"(if no such run is alive, delete {self.path})."
        )
