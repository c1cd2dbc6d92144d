"""`layoutlm-cli train`: data -> tags -> tokens -> Trainer -> metrics, recorded as it goes.

The flow, top to bottom:
1. check the flags and the output directory; create the Job (`pending`);
2. load receipts, apply the recipe (recipe.py), split, thin, tokenise (features.py);
3. write run.json, the run_config log and dataset metrics; the Job becomes `running`;
4. train with the HF Trainer; after every evaluation, metrics go to the store and run.json;
5. best/ is written from the best checkpoint; the Job becomes `succeeded` with results,
   or `failed`/`interrupted` with the reason logged.
Under torchrun only rank 0 writes jobs, metrics and files.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import signal
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..labels import entity_types, resolve_allowed_labels
from .config import TrainConfig, check_config

log = logging.getLogger(__name__)


def check_output_dir(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> dict | None:
    """Refuse to mix two jobs' files; returns the previous run.json when resuming."""
    from .artifacts import RunFile

    run_json = out / "run.json"
    if resume:
        if not run_json.exists():
            raise UserError(f"--resume: {out} has no run.json to resume; start the run without --resume.")
        previous = RunFile.load(run_json).data
        if previous.get("job_name") != cfg.job_name:
            raise UserError(f"--resume: {out} belongs to job {previous.get('job_name')!r}, not {cfg.job_name!r}.")
        return previous
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
            return None
        what = "another run's files"
        if run_json.exists():
            try:
                prev = RunFile.load(run_json).data
                what = f"job {prev.get('job_name')!r} ({prev.get('job_id')})"
            except ValueError:
                pass
        raise UserError(
            f"Output directory {out} already holds {what}; pass --resume to continue it, "
            "--overwrite-output-dir to replace it, or another --output-dir/--job-name."
        )
    return None


# --- data ------------------------------------------------------------------------------
@dataclass
class PreparedData:
    label_list: list[str]
    train: list  # TaggedReceipt
    val: list
    counts: dict
    thinning: dict
    dropped: dict


def load_source(cfg: TrainConfig):
    if cfg.dataset is not None:
        from ..sources import load_receipts

        return load_receipts(cfg.dataset, seed=cfg.seed)
    from ..sources.dynamodb import load_dynamo_receipts

    return load_dynamo_receipts(
        cfg.dynamo_table,
        region=os.environ.get("AWS_REGION"),
        endpoint_url=os.environ.get("DYNAMODB_ENDPOINT_URL"),
        statuses=tuple(cfg.label_status),
    )


def prepare_data(cfg: TrainConfig, receipts, report) -> PreparedData:
    from .recipe import build_label_list, split_counts, split_ids, tag_receipts, thin_o_lines

    if not receipts:
        raise UserError(f"The dataset {report.source} holds no receipt with words; check the file or table.")
    allowed = resolve_allowed_labels(cfg.allowed_labels, cfg.merge_amounts)
    tagged, label_counts = tag_receipts(receipts, cfg.merge_amounts, allowed)
    label_list = build_label_list(tagged)
    train_ids, val_ids = split_ids([r.id for r in tagged], cfg.val_ratio, cfg.seed)
    val_set = set(val_ids)
    train = [r for r in tagged if r.id not in val_set]
    val = [r for r in tagged if r.id in val_set]
    thinning = thin_o_lines(train, cfg.o_entity_ratio, cfg.seed)
    counts = {
        "receipts": len(tagged),
        **label_counts,
        "train": split_counts(train),
        "val": split_counts(val),
        "val_receipt_ids": val_ids,
    }
    return PreparedData(label_list, train, val, counts, thinning, report.dropped)


# --- recording -----------------------------------------------------------------------
class Recorder:
    """Everything a run writes: the job store, run.json and S3. No-op off rank 0."""

    def __init__(self, store, job, run_file, s3=None):
        self.store, self.job, self.run_file, self.s3 = store, job, run_file, s3
        self.upload_errors: list[str] = []

    def metrics(self, rows: list[dict]) -> None:
        if self.store:
            self.store.add_metrics(self.job.job_id, rows)

    def log(self, level: str, message, exception: str | None = None) -> None:
        if self.store:
            self.store.add_log(self.job.job_id, level, message, source="train", exception=exception)

    def status(self, status: str, message: str | None = None, progress: float | None = None, **results) -> None:
        if self.store:
            self.job.results.update(results)
            self.store.update_job(self.job, status=status, message=message, progress=progress)

    def upload(
        self,
        local: Path,
        prefix_attr: str,
        subdir: str = "",
        checkpoint_step=None,
        epoch=0,
        is_best=False,
        metrics=None,
    ) -> None:
        """Upload a file or folder to S3; a failure is logged and remembered, training goes on."""
        if not self.s3:
            return
        key = self.s3.storage[prefix_attr] + subdir
        try:
            if local.is_dir():
                n, size = self.s3.upload_dir(local, key)
            else:
                self.s3.upload_file(local, key)
                size = local.stat().st_size
            if checkpoint_step is not None and self.store:
                self.store.add_checkpoint(
                    self.job.job_id, self.s3.bucket, key, size, checkpoint_step, epoch, is_best=is_best, metrics=metrics
                )
        except Exception as e:  # noqa: BLE001 - any upload failure is recorded, never swallowed
            message = f"upload of {local} to s3://{self.s3.bucket}/{key} failed: {e}"
            self.upload_errors.append(message)
            self.log("ERROR", message)


def epoch_number(epoch: float | None) -> int:
    """The Trainer's fractional epoch -> the 1-based epoch it falls in (1.0 is epoch 1, 1.2 epoch 2)."""
    return max(0, math.ceil((epoch or 0) - 1e-6))


def make_callback(recorder: Recorder, label_list: list[str], total_epochs: float):
    from transformers import TrainerCallback

    class RecordingCallback(TrainerCallback):
        """Turns the Trainer's logs and evaluations into JobMetrics and run.json entries."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            step, epoch = state.global_step, epoch_number(state.epoch)
            rows = []
            if "loss" in logs:
                rows.append({"name": "train_loss", "value": float(logs["loss"]), "unit": "loss"})
            if "learning_rate" in logs:
                rows.append({"name": "learning_rate", "value": float(logs["learning_rate"]), "unit": "rate"})
            recorder.metrics([{**r, "step": step, "epoch": epoch} for r in rows])

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if not state.is_world_process_zero or not metrics:
                return
            step, epoch = state.global_step, epoch_number(state.epoch)
            names = {
                "eval_f1": ("val_f1", "ratio"),
                "eval_precision": ("val_precision", "ratio"),
                "eval_recall": ("val_recall", "ratio"),
                "eval_loss": ("eval_loss", "loss"),
            }
            rows = [
                {"name": names[k][0], "value": float(metrics[k]), "unit": names[k][1]} for k in names if k in metrics
            ]
            for key, value in metrics.items():
                if key.startswith("eval_label_"):
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
                    for t in entity_types(label_list)
                },
            }
            if recorder.run_file:
                recorder.run_file.append("epoch_metrics", entry)
                recorder.upload(recorder.run_file.path, "logs_prefix", "run.json")
            progress = 100 * min(1.0, (state.epoch or 0) / total_epochs)
            recorder.status(
                "running", message=f"epoch {epoch}: val_f1 {metrics.get('eval_f1', 0):.4f}", progress=progress
            )

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.exists():
                recorder.upload(
                    ckpt,
                    "checkpoints_prefix",
                    f"{ckpt.name}/",
                    checkpoint_step=state.global_step,
                    epoch=epoch_number(state.epoch),
                )

    return RecordingCallback()


def _trainer_class():
    import torch
    from transformers import Trainer

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

        def _get_eval_sampler(self, eval_dataset):
            # Predictions are mapped back to words by example position, so evaluation must
            # keep the dataset's order (transformers 5 length-groups eval batches too).
            return torch.utils.data.SequentialSampler(eval_dataset)

    return ReceiptTrainer


def _quiet_progress_class():
    from transformers.trainer_callback import ProgressCallback

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
                    f"epoch {state.epoch:.0f}: val F1 {metrics['eval_f1']:.4f} "
                    f"(P {metrics['eval_precision']:.4f}, R {metrics['eval_recall']:.4f}), "
                    f"eval loss {metrics['eval_loss']:.4f}"
                )

    return QuietProgress


# --- the run ---------------------------------------------------------------------------
class Interrupted(BaseException):
    """SIGTERM (e.g. a spot instance reclaimed): stop, mark the job interrupted."""


class StopRequest:
    """The first SIGTERM asks the Trainer to save a checkpoint at the next step and stop;
    a second one stops at once."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        if self.requested:
            raise Interrupted("received a second SIGTERM")
        self.requested = True


def make_stop_callback(stop: StopRequest):
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if stop.requested:
                control.should_save = True
                control.should_training_stop = True

    return StopOnSignal()


def config_record(cfg: TrainConfig, resume: bool, precision: str) -> dict:
    """The job_config: every flag, plus the software it ran with. Never credentials."""
    import torch
    import transformers

    record = asdict(cfg)
    record.update(
        resume=resume,
        output_dir=str(cfg.resolved_output_dir()),
        precision_resolved=precision,
        environment={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        },
    )
    return record


# x86: AVX512-BF16 (Zen 4+, Cooper Lake) or AMX-BF16 (Sapphire Rapids+); ARM64: the BF16 extension.
# torch's own "bf16 supported" (mkldnn) also says yes on plain AVX512, where bf16 is emulated and slower.
NATIVE_BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_has_native_bf16(capabilities: Mapping | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (from torch.cpu.get_capabilities())."""
    if capabilities is None:
        import torch

        capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(feature) for feature in NATIVE_BF16_CPU_FEATURES)


def resolve_precision(
    choice: str, cuda: bool | None = None, cuda_bf16: bool | None = None, cpu_bf16: bool | None = None
) -> str:
    """--precision -> the one used: fp32, bf16 or fp16. `auto` is bf16 on a GPU that has it (else fp16)
    and on a CPU with native bf16 (else fp32). The hardware facts are detected unless given."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        cuda_bf16 = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        return ("bf16" if cuda_bf16 else "fp16") if choice == "auto" else choice
    cpu_bf16 = cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16
    if choice == "auto":
        return "bf16" if cpu_bf16 else "fp32"
    if choice == "fp16":
        raise UserError("--precision fp16 needs a CUDA GPU; use --precision auto or fp32 on CPU.")
    if choice == "bf16" and not cpu_bf16:
        raise UserError(
            "--precision bf16 needs a CUDA GPU or a CPU with native bf16 (AVX512-BF16 or AMX); "
            "this CPU has neither, so use --precision auto or fp32."
        )
    return choice


def precision_flags(precision: str, cuda: bool) -> dict:
    """TrainingArguments for a resolved precision: on a GPU, fp16/bf16 autocast through accelerate.
    On a CPU, bf16 is the trainer's own autocast of the training forward (ReceiptTrainer)."""
    return {precision: True} if cuda and precision != "fp32" else {}


def run_training(
    cfg: TrainConfig, store_uri: str | None = None, resume: bool = False, overwrite_output_dir: bool = False, say=print
) -> dict:
    """Train one job; returns the summary. Raises UserError for problems the user can fix."""
    check_config(cfg)
    precision = resolve_precision(cfg.precision)  # refused here, before a job exists, if unsupported
    is_main = int(os.environ.get("RANK", "0")) == 0
    out = cfg.resolved_output_dir()
    previous = check_output_dir(out, cfg, resume, overwrite_output_dir) if is_main else None

    from .artifacts import RunFile

    store = job = run_file = s3 = None
    if is_main:
        from ..store import open_store

        store = open_store(store_uri)
        if cfg.output_s3_uri:
            from ..s3 import S3Sync

            s3 = S3Sync(cfg.output_s3_uri, cfg.job_name)
            s3.check()
        if previous:
            job = store.get_job(previous["job_id"])
            if job is None:
                raise UserError(
                    f"--resume: job {previous['job_id']} of {out}/run.json is not in "
                    f"{store.description}; pass the --job-store it was recorded in."
                )
            run_file = RunFile(out / "run.json", previous)
        else:
            job = store.create_job(
                cfg.job_name,
                config_record(cfg, resume, precision),
                description=cfg.description,
                priority=cfg.priority,
                storage=s3.storage if s3 else None,
            )
            run_file = RunFile(
                out / "run.json",
                {"job_id": job.job_id, "job_name": cfg.job_name, "job_store": store.description, "status": "pending"},
            )
            run_file.save()
    recorder = Recorder(store, job, run_file, s3)
    holder: dict = {}  # what _train built so far, for the record of a run that stops early
    stop = StopRequest()
    old_handler = signal.signal(signal.SIGTERM, stop)
    try:
        summary = _train(cfg, recorder, out, previous, say, is_main, holder, stop, precision)
    except (KeyboardInterrupt, Interrupted) as e:
        _finish_stopped(recorder, holder, "interrupted", f"interrupted: {e or 'KeyboardInterrupt'}")
        raise UserError(
            f"Training interrupted; job {job.job_id if job else ''} is marked interrupted. "
            "Continue it with the same command plus --resume."
        ) from None
    except UserError as e:
        _finish_stopped(recorder, holder, "failed", str(e))
        raise
    except Exception as e:
        _finish_stopped(recorder, holder, "failed", f"{type(e).__name__}: {e}", traceback.format_exc())
        raise
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    if recorder.upload_errors:  # training succeeded; the failed uploads still fail the command
        raise UserError(
            f"Training finished but {len(recorder.upload_errors)} S3 upload(s) failed "
            f"(first: {recorder.upload_errors[0]}); best/ is in {summary['best_dir']}."
        )
    return summary


def _finish_stopped(recorder: Recorder, holder: dict, status: str, message: str, exc: str | None = None):
    """A run that did not finish still leaves its best model, its reason and its status."""
    if recorder.store is None:
        return
    trainer = holder.get("trainer")
    if trainer is not None and trainer.state.best_model_checkpoint and holder.get("tokenizer") is not None:
        from .artifacts import copy_checkpoint_as_best

        best = Path(trainer.state.best_model_checkpoint)
        if best.exists():
            copy_checkpoint_as_best(
                best,
                Path(trainer.args.output_dir) / "best",
                holder["tokenizer"],
                holder["label_list"],
                {"best_f1": trainer.state.best_metric},
            )
    recorder.log("ERROR" if status == "failed" else "WARNING", message, exception=exc)
    recorder.status(status, message=message[:500])
    if recorder.run_file:
        recorder.run_file.update(status=status, error=message)
        recorder.upload(recorder.run_file.path, "logs_prefix", "run.json")


def _train(
    cfg: TrainConfig,
    recorder: Recorder,
    out: Path,
    previous: dict | None,
    say,
    is_main: bool,
    holder: dict,
    stop: StopRequest,
    precision: str,
) -> dict:
    import torch
    import transformers
    from transformers import EarlyStoppingCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ..metrics import entity_scores
    from ..model import load_model
    from .artifacts import latest_checkpoint, save_model_dir
    from .collate import Collator
    from .features import build_examples, merge_predictions, sequences

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # weight-saving bars; the training bar stays
    started = time.time()
    receipts, report = load_source(cfg)
    data = prepare_data(cfg, receipts, report)
    label_list = data.label_list
    if previous and previous.get("label_list") and previous["label_list"] != label_list:
        raise UserError(
            f"--resume: the checkpoints in {out} were trained with labels {previous['label_list']}, "
            f"but this run's data and flags give {label_list}; resume with the original flags."
        )
    label2id = {t: i for i, t in enumerate(label_list)}
    id2label = dict(enumerate(label_list))
    transformers.set_seed(cfg.seed)  # fresh weights (classifier, box embeddings) are part of the run
    tokenizer, model = load_model(cfg.pretrained, label_list)
    holder.update(tokenizer=tokenizer, label_list=label_list)

    train_seqs = sequences(data.train, cfg.example_unit)
    val_seqs = sequences(data.val, cfg.example_unit)
    train_ex, _ = build_examples(train_seqs, tokenizer, label2id, cfg.max_seq_length, cfg.window_overlap)
    val_ex, val_windows = build_examples(val_seqs, tokenizer, label2id, cfg.max_seq_length, cfg.window_overlap)
    train_ex = [e for e in train_ex if any(l != -100 for l in e["labels"])]  # windows with nothing to learn
    by_length = sorted(range(len(val_ex)), key=lambda i: len(val_ex[i]["input_ids"]))  # less padding in eval
    val_ex, val_windows = [val_ex[i] for i in by_length], [val_windows[i] for i in by_length]
    if not train_ex or not val_ex:
        raise UserError("After the split there is nothing to train or validate on; add receipts or lower --val-ratio.")
    data.counts["train"].update(examples=len(train_ex), tokens=sum(len(e["input_ids"]) for e in train_ex))
    data.counts["val"].update(examples=len(val_ex), tokens=sum(len(e["input_ids"]) for e in val_ex))

    if is_main:
        _record_start(cfg, recorder, data, report, previous)
        recorder.run_file.update(precision_resolved=precision)
    say(
        f"job {recorder.job.job_id if recorder.job else '(rank > 0)'}: {len(data.train)} train / "
        f"{len(data.val)} val receipts, {len(train_ex)} train examples, {len(label_list)} tags, {precision}"
    )

    val_true = [s["tags"] for s in val_seqs]

    def compute_metrics(pred):
        tags = merge_predictions(pred.predictions, val_windows, [len(t) for t in val_true], id2label)
        return entity_scores(val_true, tags, entity_types(label_list))

    steps_per_epoch = math.ceil(
        len(train_ex) / (cfg.batch_size * cfg.gradient_accumulation_steps * int(os.environ.get("WORLD_SIZE", "1")))
    )
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a fraction of all steps
        lr_scheduler_type="linear",
        weight_decay=cfg.weight_decay,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        label_smoothing_factor=cfg.label_smoothing,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=max(1, steps_per_epoch // 4),
        load_best_model_at_end=True,
        metric_for_best_model="f1",
        greater_is_better=True,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=cfg.num_workers,
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=True,  # the pooler takes no part in token classification
        disable_tqdm=not is_main,
        **precision_flags(precision, torch.cuda.is_available()),
    )
    callbacks = [make_callback(recorder, label_list, cfg.epochs), make_stop_callback(stop)]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ex,
        eval_dataset=val_ex,
        processing_class=tokenizer,
        data_collator=Collator(tokenizer.pad_token_id, 8 if torch.cuda.is_available() else None),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1),
        cpu_bf16=precision == "bf16" and not torch.cuda.is_available(),
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)  # other ranks would print every log dict
    if is_main:
        trainer.add_callback(_quiet_progress_class()(say))
    holder["trainer"] = trainer
    recorder.status("running", message="resumed" if previous else "training started", progress=0)
    resume_from = latest_checkpoint(out) if previous else None
    if stop.requested:
        raise Interrupted("received SIGTERM before training started")
    train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if stop.requested:
        raise Interrupted(f"received SIGTERM; checkpoint-{trainer.state.global_step} saved")

    state = trainer.state
    evals = [h for h in state.log_history if "eval_f1" in h]
    if not evals:
        raise UserError("Training ended before any evaluation; raise --epochs or --max-steps.")
    best = max(evals, key=lambda h: h["eval_f1"])  # first of equals, like the Trainer's choice
    best_dir = out / "best"
    results = {
        "best_f1": best["eval_f1"],
        "best_precision": best["eval_precision"],
        "best_recall": best["eval_recall"],
        "best_epoch": epoch_number(best["epoch"]),
        "best_step": best["step"],
        "epochs_completed": len(evals),
        "stopped_early": state.global_step < state.max_steps,
        "label_list": label_list,
        "train_runtime": round(time.time() - started, 2),
        "train_loss": float(train_output.training_loss),
        "best_dir": str(best_dir),
        "best_checkpoint": state.best_model_checkpoint,
    }
    if is_main:
        # load_best_model_at_end put the best weights back into trainer.model.
        save_model_dir(
            best_dir,
            trainer.model,
            tokenizer,
            label_list,
            {
                "best_f1": results["best_f1"],
                "job_id": recorder.job.job_id,
                "example_unit": cfg.example_unit,
                "max_seq_length": cfg.max_seq_length,
                "window_overlap": cfg.window_overlap,
                "merge_amounts": cfg.merge_amounts,
                "allowed_labels": cfg.allowed_labels,
            },
        )
        recorder.upload(
            best_dir,
            "best_prefix",
            checkpoint_step=results["best_step"],
            epoch=results["best_epoch"],
            is_best=True,
            metrics={"val_f1": results["best_f1"]},
        )
        _record_end(recorder, results)
    return {"job_id": recorder.job.job_id if recorder.job else None, **results}


def _record_start(cfg: TrainConfig, recorder: Recorder, data: PreparedData, report, previous) -> None:
    counts, thin = data.counts, data.thinning
    recorder.run_file.update(
        status="running",
        config=asdict(cfg),
        label_list=data.label_list,
        dataset={"source": report.source, "dropped_by_reader": data.dropped, **counts},
        split={
            "seed": cfg.seed,
            "val_ratio": cfg.val_ratio,
            "rule": "sha256(seed, receipt id) < val_ratio",
            "val_receipt_ids": counts["val_receipt_ids"],
        },
        thinning=thin,
    )
    if previous:
        recorder.log("INFO", "resumed from the latest checkpoint")
        return
    recorder.log(
        "INFO",
        {
            "type": "run_config",
            "data": {
                "config": asdict(cfg),
                "label_list": data.label_list,
                "dataset": {k: v for k, v in counts.items() if k != "val_receipt_ids"},
                "thinning": thin,
                "dropped_by_reader": data.dropped,
            },
        },
    )
    rows = []
    for split in ("train", "val"):
        for key in ("receipts", "examples", "words", "entity_words", "lines"):
            rows.append({"name": f"dataset_{split}_{key}", "value": counts[split][key], "unit": "count"})
    rows += [
        {"name": "dataset_lines_dropped", "value": thin["lines_dropped"], "unit": "count"},
        {"name": "dataset_words_dropped", "value": thin["words_dropped"], "unit": "count"},
    ]
    for key in ("ratio_before", "ratio_after"):
        if thin[key] is not None:
            rows.append({"name": f"dataset_o_entity_{key}", "value": thin[key], "unit": "ratio"})
    recorder.metrics([{**r, "step": 0, "epoch": 0} for r in rows])


def _record_end(recorder: Recorder, results: dict) -> None:
    summary = {"type": "run_summary", "status": "succeeded", **results}
    recorder.run_file.update(status="succeeded", summary=results)
    recorder.upload(recorder.run_file.path, "logs_prefix", "run.json")
    recorder.log("INFO", summary)
    recorder.status(
        "succeeded",
        message=f"best val_f1 {results['best_f1']:.4f} at epoch {results['best_epoch']}",
        progress=100,
        **{k: v for k, v in results.items() if v is not None},
    )
