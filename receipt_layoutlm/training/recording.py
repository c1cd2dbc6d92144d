"""What a run records as it goes, and the Trainer callbacks that feed it.

Recorder writes the job store, run.json and S3; RecordingCallback turns the Trainer's logs and
evaluations into metrics; QuietProgress prints one line per evaluation; StopOnSignal turns a
SIGTERM into a checkpoint and a clean stop. Only run.py imports this module (it imports
transformers), so `layoutlm-cli --help` stays fast.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..labels import entity_types

log = logging.getLogger(__name__)


FLUSH_EVERY_S = 5.0  # while writes are journaled, how often the store is tried again


class Recorder:
    """Everything a run writes: the job store, run.json and S3. No-op off rank 0.

    Store writes that fail with StoreUnavailable go to the output dir's journal (store/journal.py),
    and so does every later write until the journal is flushed, so the store gets them in order."""

    def __init__(self, store, job, run_file, s3=None, journal=None):
        self.store, self.job, self.run_file, self.s3, self.journal = store, job, run_file, s3, journal
        self.upload_errors: list[str] = []
        self.written_status = job.status if job else None  # the Job status this run last wrote (or journaled)
        self.next_flush = 0.0

    def metrics(self, rows: list[dict]) -> None:
        if self.store:
            self._write([{"item": i} for i in self.store.metric_items(self.job.job_id, rows)])

    def log(self, level: str, message, exception: str | None = None) -> None:
        if self.store:
            item = self.store.log_item(self.job.job_id, level, message, source="train", exception=exception)
            self._write([{"item": item}])

    def _write(self, entries: list[dict]) -> None:
        """Write to the store; while it is unavailable (or older writes wait in the journal), journal."""
        from ..store import StoreUnavailable

        if not entries:
            return
        if self.journal is None:
            self._apply(entries)
            return
        if self.journal.pending and not self.flush():
            self.journal.append(entries)
            return
        try:
            self._apply(entries)
        except StoreUnavailable as e:
            log.warning("job store unavailable, writes journaled in %s: %s", self.journal.path, e)
            self.journal.append(entries)
            self.next_flush = time.monotonic() + FLUSH_EVERY_S

    def _apply(self, entries: list[dict]) -> None:
        items = [e["item"] for e in entries if "item" in e]
        for entry in entries:
            if "job" in entry:
                self.store.update_job(self.job)  # fenced by the attempt number; keeps a cancel request
                if entry["status_row"]:
                    self.store.table.put(entry["status_row"])
        if len(items) == 1:
            self.store.table.put(items[0])
        elif items:
            self.store.table.put_many(items)

    def flush(self, force: bool = False) -> bool:
        """Replay the journal (at most every FLUSH_EVERY_S unless force); True when it is empty."""
        from ..store import StoreUnavailable

        if self.journal is None or not self.journal.pending:
            return True
        if not force and time.monotonic() < self.next_flush:
            return False
        try:
            flushed = self.journal.flush(self.store)
        except StoreUnavailable:
            self.next_flush = time.monotonic() + FLUSH_EVERY_S
            return False
        log.warning("job store back: %d journaled write(s) flushed", flushed.written)
        if flushed.dropped:
            self._sync_job()
        return True

    def _sync_job(self) -> None:
        """A journaled Job write was dropped because another process moved the job on: take its state,
        so that the next write is fenced against it (a job claimed again raises LeaseLost there)."""
        stored = self.store.get_job(self.job.job_id)
        if stored is not None:
            self.job.cancel_requested = self.job.cancel_requested or stored.cancel_requested
            self.written_status = stored.status

    def heartbeat(self) -> bool:
        """The job is alive (Job.heartbeat_at, host, pid); True when a cancel was requested. A store that
        does not answer skips this beat (training goes on); a job claimed by another worker stops it."""
        from ..store import LeaseLost

        if not self.store:
            return False
        if not self.flush():
            return False  # the store is still away; the journal's Job writes must land first
        try:
            return self.store.heartbeat(self.job)
        except LeaseLost:
            raise
        except Exception as e:  # noqa: BLE001 - the next beat retries; the lease allows for a few missed
            log.warning("heartbeat of job %s not recorded: %s", self.job.job_id, e)
            return False

    def status(self, status: str, message: str | None = None, progress: float | None = None, **results) -> None:
        """Rewrite the Job (status, results, progress) and, on a status change, add a JobStatus row."""
        if not self.store:
            return
        job = self.job
        job.results.update(results)
        changed = status != job.status
        job.status = status
        row = self.store.status_item(job, message=message, progress=progress) if changed else None
        entry = {"job": job.to_item(), "expect_status": self.written_status, "status_row": row}
        self.written_status = status
        self._write([entry])

    def upload(
        self,
        local: Path,
        prefix_attr: str,
        subdir: str = "",
        checkpoint_step=None,
        epoch=0,
        is_best=False,
        metrics=None,
    ) -> bool:
        """Upload a file or folder to S3; a failure is logged and remembered, training goes on.
        Returns whether it was uploaded (and its JobCheckpoint row written)."""
        if not self.s3:
            return False
        key = self.s3.storage[prefix_attr] + subdir
        try:
            if local.is_dir():
                n, size = self.s3.upload_dir(local, key)
            else:
                self.s3.upload_file(local, key)
                size = local.stat().st_size
        except Exception as e:  # noqa: BLE001 - any upload failure is recorded, never swallowed
            message = f"upload of {local} to s3://{self.s3.bucket}/{key} failed: {e}"
            self.upload_errors.append(message)
            self.log("ERROR", message)
            return False
        if checkpoint_step is not None and self.store:
            # Journaled like every other write: a store outage delays the row, it does not lose it.
            item = self.store.checkpoint_item(
                self.job.job_id, self.s3.bucket, key, size, checkpoint_step, epoch, is_best=is_best, metrics=metrics
            )
            self._write([{"item": item}])
        return True

    def prune_s3_checkpoints(self, output_dir: Path, best_checkpoint: str | None) -> None:
        """Delete from S3 the checkpoints --save-total-limit deleted here; call it once a newer checkpoint
        is uploaded. Resuming elsewhere needs only the newest checkpoint and the best one, and the Trainer
        keeps both on disk; the best one is never deleted, whatever the disk holds.

        Its JobCheckpoint row is first marked `s3_deleted` (no one fetches it any more), then the objects
        are deleted and `deleted_at` is added. A deletion that fails is logged and retried after the next
        save; the bucket's lifecycle rule (docs/operations.md) is the second line of defence.
        """
        from ..store import now_iso

        if not self.s3 or not self.store:
            return
        best_name = Path(best_checkpoint).name if best_checkpoint else None
        prefix = self.s3.storage["checkpoints_prefix"]
        try:
            rows = self.store.checkpoints(self.job.job_id)
        except Exception as e:  # noqa: BLE001 - pruning waits for the next save
            log.warning("checkpoint rows of job %s not read: %s", self.job.job_id, e)
            return
        for row in rows:
            name = f"checkpoint-{row['step']}"
            if (
                row.get("is_best")
                or row.get("deleted_at")
                or not row["s3_key"].startswith(prefix)
                or name == best_name
                or (Path(output_dir) / name).exists()
            ):
                continue
            try:
                if not row.get("s3_deleted"):
                    self.store.mark_checkpoint(row, s3_deleted=True)
                    row = {**row, "s3_deleted": True}
                n = self.s3.delete_prefix(row["s3_key"])
                self.store.mark_checkpoint(row, deleted_at=now_iso())
            except Exception as e:  # noqa: BLE001 - training goes on; retried after the next save
                self.log(
                    "WARNING", f"{name} pruned locally but not deleted from s3://{self.s3.bucket}/{row['s3_key']}: {e}"
                )
                continue
            self.log("INFO", f"{name} pruned locally: deleted {n} objects under s3://{self.s3.bucket}/{row['s3_key']}")


def epoch_number(epoch: float | None) -> int:
    """The Trainer's fractional epoch -> the 1-based epoch it falls in (1.0 is epoch 1, 1.2 epoch 2)."""
    return max(0, math.ceil((epoch or 0) - 1e-6))


class RecordingCallback(TrainerCallback):
    """Turns the Trainer's logs and evaluations into JobMetrics and run.json entries."""

    def __init__(self, recorder: Recorder, label_list: list[str], total_epochs: float):
        self.recorder, self.label_list, self.total_epochs = recorder, label_list, total_epochs

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        step, epoch = state.global_step, epoch_number(state.epoch)
        rows = []
        if "loss" in logs:
            rows.append({"name": "train_loss", "value": float(logs["loss"]), "unit": "loss"})
        if "learning_rate" in logs:
            rows.append({"name": "learning_rate", "value": float(logs["learning_rate"]), "unit": "rate"})
        self.recorder.metrics([{**r, "step": step, "epoch": epoch} for r in rows])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        recorder = self.recorder
        step, epoch = state.global_step, epoch_number(state.epoch)
        names = {
            "eval_f1": ("val_f1", "ratio"),
            "eval_precision": ("val_precision", "ratio"),
            "eval_recall": ("val_recall", "ratio"),
            "eval_loss": ("eval_loss", "loss"),
        }
        rows = [{"name": names[k][0], "value": float(metrics[k]), "unit": names[k][1]} for k in names if k in metrics]
        for key, value in metrics.items():
            if key.startswith(("eval_label_", "eval_macro_")):  # macro_*: a --checkpoint-metric
                unit = "count" if key.endswith("_support") else "ratio"
                rows.append({"name": key.removeprefix("eval_"), "value": value, "unit": unit})
        recorder.metrics([{**r, "step": step, "epoch": epoch} for r in rows])
        train_losses = [h["loss"] for h in state.log_history if "loss" in h]
        entry = {
            "epoch": epoch,
            "step": step,
            "val_f1": metrics.get("eval_f1"),
            "val_precision": metrics.get("eval_precision"),
            "val_recall": metrics.get("eval_recall"),
            "eval_loss": metrics.get("eval_loss"),
            "train_loss": train_losses[-1] if train_losses else None,
            "per_label": {
                t: {m: metrics.get(f"eval_label_{t}_{m}") for m in ("f1", "precision", "recall", "support")}
                for t in entity_types(self.label_list)
            },
        }
        if recorder.run_file:
            recorder.run_file.append("epoch_metrics", entry)
            recorder.upload(recorder.run_file.path, "logs_prefix", "run.json")
        progress = 100 * min(1.0, (state.epoch or 0) / self.total_epochs)
        recorder.status("running", message=f"epoch {epoch}: val_f1 {metrics.get('eval_f1', 0):.4f}", progress=progress)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.exists():
            uploaded = self.recorder.upload(
                ckpt,
                "checkpoints_prefix",
                f"{ckpt.name}/",
                checkpoint_step=state.global_step,
                epoch=epoch_number(state.epoch),
            )
            if uploaded:  # never delete an older copy while the newest is not safely in S3
                self.recorder.prune_s3_checkpoints(Path(args.output_dir), state.best_model_checkpoint)


class QuietProgress(ProgressCallback):
    """The Trainer's progress bars, without a dict printed per log; one line per evaluation."""

    def __init__(self, say):
        super().__init__()
        self.say = say

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        super().on_evaluate(args, state, control, **kwargs)
        if state.is_world_process_zero and metrics and "eval_f1" in metrics:
            self.say(
                f"epoch {epoch_number(state.epoch)}: val F1 {metrics['eval_f1']:.4f} "
                f"(P {metrics['eval_precision']:.4f}, R {metrics['eval_recall']:.4f}), "
                f"eval loss {metrics['eval_loss']:.4f}"
            )


class StopOnSignal(TrainerCallback):
    """After a SIGTERM (`stop.requested`) or a cancel request, save a checkpoint at the end of the
    step and stop. Every logging interval it beats the job's heartbeat and looks for a cancel request.

    Under torchrun all ranks must stop at the same step, or the ones still training wait forever in
    their next all-reduce: SIGTERM reaches the ranks at different moments, and only rank 0 beats the
    heartbeat and sees a cancel. So at every step end the ranks agree on the stop (the max of their
    flags) over a gloo group of their own: a CPU all-reduce of two numbers, no GPU synchronisation.
    """

    def __init__(self, stop, recorder: Recorder):
        self.stop, self.recorder = stop, recorder
        self.group = None

    def on_train_begin(self, args, state, control, **kwargs):
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self.group = torch.distributed.new_group(backend="gloo")  # every rank calls it here, as it must

    def on_train_end(self, args, state, control, **kwargs):
        if self.group is not None:
            torch.distributed.destroy_process_group(self.group)
            self.group = None

    def _agree(self) -> None:
        if self.group is None:
            return
        flags = torch.tensor([self.stop.requested, self.stop.cancelled], dtype=torch.int32)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX, group=self.group)
        self.stop.requested, self.stop.cancelled = bool(flags[0]), bool(flags[1])

    @staticmethod
    def _keep_newest(args) -> None:
        # With save_total_limit 1 the Trainer deletes every checkpoint but the best when train() ends,
        # also when it ends on a stop: the checkpoint saved at the stop, which the run resumes from,
        # would go. At 2 it keeps the best and the newest, as limit 1 does during training anyway.
        if args.save_total_limit == 1:
            args.save_total_limit = 2

    def on_step_end(self, args, state, control, **kwargs):
        self._agree()
        if self.stop.requested:
            self._keep_newest(args)
            control.should_save = True
            control.should_training_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        # Stopped inside an epoch: the Trainer would evaluate the partial epoch now and the
        # resumed run the same epoch again, recording it twice. The checkpoint is already saved.
        if self.stop.requested and abs((state.epoch or 0) - round(state.epoch or 0)) > 1e-6:
            control.should_evaluate = False
            control.should_save = False

    def on_log(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.recorder.heartbeat() and not self.stop.requested:
            self.stop.requested = self.stop.cancelled = True
            if self.group is None:  # alone: save and stop now; under torchrun all ranks do at the next step end
                self._keep_newest(args)
                control.should_save = True
                control.should_training_stop = True


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped batches in an order drawn from (seed, epoch) alone. The Trainer's sampler draws it
    from the global RNG when the epoch starts: a run resumed mid-epoch would draw another order for
    the rest of that epoch than the uninterrupted run did (the RNG state saved in the checkpoint is
    restored only after that draw), and end with other weights."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer (through accelerate) before each epoch
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class ReceiptTrainer(Trainer):
    def __init__(self, *args, cpu_bf16: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.cpu_bf16 = cpu_bf16

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True):
        # bf16 on a CPU autocasts the training forward only. (TrainingArguments(bf16=True, use_cpu=True)
        # would have accelerate autocast evaluation too.) Evaluation stays fp32, as `predict` runs
        # best/, so the F1 recorded for a checkpoint is the F1 it gives.
        if self.cpu_bf16 and self.model.training:
            return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=cache_enabled)
        return super().autocast_smart_context_manager(cache_enabled)

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        # Predictions are mapped back to words by example position, so evaluation must
        # keep the dataset's order (transformers 5 length-groups eval batches too).
        return torch.utils.data.SequentialSampler(eval_dataset)
