"""`layoutlm-cli train`: data -> tags -> tokens -> Trainer -> metrics, recorded as it goes.

The flow, top to bottom:
1. check the flags; claim the output directory (.claim); check what it holds;
2. load receipts, apply the recipe (data.py, recipe.py), load the model, tokenise (features.py):
   every error up to here leaves no job behind and changes none;
3. create the Job (`pending`) or take up the resumed one; write run.json, the run_config log
   and dataset metrics; the Job becomes `running`;
4. train with the HF Trainer; after every evaluation, metrics go to the store and run.json;
5. best/ is written from the best checkpoint; the Job becomes `succeeded` with results,
   or `failed`/`interrupted` with the reason logged.
Under torchrun only rank 0 writes jobs, metrics and files.
"""

from __future__ import annotations

import contextlib
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
from typing import TYPE_CHECKING

import torch
import transformers
from transformers import EarlyStoppingCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..errors import UserError
from ..labels import entity_types
from ..metrics import entity_scores, word_confusion
from ..model import load_model
from ..store import LeaseLost
from ..store.journal import Journal
from .artifacts import CLAIM_FILE, OutputDirClaim, RunFile, copy_checkpoint_as_best, latest_checkpoint, save_model_dir
from .collate import Collator
from .config import TrainConfig, check_config, checkpoint_metric_labels
from .data import PreparedData, prepare_config_data
from .features import build_examples, merge_predictions, sequences
from .recipe import line_boxes
from .recording import (
    QuietProgress,
    ReceiptTrainer,
    Recorder,
    RecordingCallback,
    StopOnSignal,
    epoch_number,
)

if TYPE_CHECKING:
    from ..aws import AwsSettings


def check_output_dir(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> dict | None:
    """Refuse to mix two jobs' files; returns the previous run.json when resuming.

    Called with the directory claimed, so no other run is working in it.
    """
    run_json = out / "run.json"
    if resume:
        if not run_json.exists():
            raise UserError(f"--resume: {out} has no run.json to resume; start the run without --resume.")
        previous = RunFile.load(run_json).data
        if previous.get("job_name") != cfg.job_name:
            raise UserError(f"--resume: {out} belongs to job {previous.get('job_name')!r}, not {cfg.job_name!r}.")
        recorded = previous.get("config") or {}
        same = ("dataset", "dynamo_table", "split_by", "val_keys", "checkpoint_metric")  # validation stays as it was
        for flag, key in (("--" + k.replace("_", "-"), k) for k in same):
            if key in recorded and recorded[key] != getattr(cfg, key):
                raise UserError(
                    f"--resume: job {cfg.job_name!r} was trained with {flag} {recorded[key]!r}, not "
                    f"{getattr(cfg, key)!r}; resume with the original {flag}, or start a new job."
                )
        return previous
    contents = [p for p in out.iterdir() if p.name != CLAIM_FILE]
    if not contents:
        return None
    prev = None
    if run_json.exists():
        with contextlib.suppress(UserError):
            prev = RunFile.load(run_json).data
    # A run that failed before its first checkpoint left nothing worth keeping in the directory.
    failed_early = prev is not None and prev.get("status") == "failed" and latest_checkpoint(out) is None
    if overwrite or failed_early:
        for path in contents:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        return None
    what = f"job {prev.get('job_name')!r} ({prev.get('job_id')})" if prev else "another run's files"
    raise UserError(
        f"Output directory {out} already holds {what}; pass --resume to continue it, "
        "--overwrite-output-dir to replace it, or another --output-dir/--job-name."
    )


# --- the run ---------------------------------------------------------------------------
class Interrupted(BaseException):
    """SIGTERM (e.g. a spot instance reclaimed): stop, mark the job interrupted.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` in the Trainer,
    a callback or our own code can swallow it and carry on training.
    """


class Cancelled(BaseException):
    """`jobs cancel` asked this run to stop: it saved a checkpoint and ends `cancelled`."""


class StopRequest:
    """The first SIGTERM (or a cancel request) asks the Trainer to save a checkpoint at the next step
    and stop; a second SIGTERM stops at once."""

    def __init__(self):
        self.requested = False
        self.cancelled = False
        self.signals = 0  # received by this process (under torchrun another rank's stop sets `requested` too)

    def __call__(self, signum, frame):
        self.signals += 1
        if self.signals > 1 and not self.cancelled:
            raise Interrupted("received a second SIGTERM")
        self.requested = True


def previous_run_of(job_id: str, out: Path, cfg: TrainConfig, overwrite: bool) -> dict | None:
    """For an existing job: its run.json when `out` holds its earlier attempt (resume), else None
    after the usual checks (another job's files are refused)."""
    if (out / "run.json").exists():
        try:
            data = RunFile.load(out / "run.json").data
        except (UserError, ValueError):
            data = {}
        if data.get("job_id") == job_id:
            return data
    return check_output_dir(out, cfg, False, overwrite)


def config_record(cfg: TrainConfig, resume: bool, precision: str | None = None, split: dict | None = None) -> dict:
    """The job_config: every flag, plus the software it ran with and how validation was chosen
    (split: PreparedData.split, once the data is read). Never credentials."""
    record = asdict(cfg)
    if split:
        record.update(split_record(split))
    record.update(
        resume=resume,
        output_dir=str(cfg.resolved_output_dir()),
        # Resolved where the job runs; None for a queued job (the worker's run.json records it).
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


def split_record(split: dict) -> dict:
    """What the job_config says about the validation set: the split's groups, or the keys' hash."""
    out = {"split_groups": split.get("groups")}
    if split.get("val_keys_sha256"):
        out["val_keys_sha256"] = split["val_keys_sha256"]
    return out


# x86: AVX512-BF16 (Zen 4+, Cooper Lake) or AMX-BF16 (Sapphire Rapids+); ARM64: the BF16 extension.
# torch's own "bf16 supported" (mkldnn) also says yes on plain AVX512, where bf16 is emulated and slower.
NATIVE_BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_has_native_bf16(capabilities: Mapping | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (from torch.cpu.get_capabilities())."""
    if capabilities is None:
        capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(feature) for feature in NATIVE_BF16_CPU_FEATURES)


def resolve_precision(
    choice: str, cuda: bool | None = None, cuda_bf16: bool | None = None, cpu_bf16: bool | None = None
) -> str:
    """--precision -> the one used: fp32, bf16 or fp16. `auto` is bf16 on a GPU that has it (else fp16)
    and on a CPU with native bf16 (else fp32). The hardware facts are detected unless given."""
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
    cfg: TrainConfig,
    store_uri: str | None = None,
    resume: bool = False,
    overwrite_output_dir: bool = False,
    say=print,
    aws: AwsSettings | None = None,
    job=None,
    callbacks: list | None = None,
) -> dict:
    """Train one job; returns the summary. Raises UserError for problems the user can fix.

    store_uri: the job store (None: store.resolve_store_uri()); aws: region and endpoints of
    the DynamoDB table, the job store and S3. job: an existing Job to run (a queued job a worker
    claimed, or `resume`) instead of creating one; its earlier attempt in the output dir, if any,
    is continued from the latest checkpoint. callbacks: extra TrainerCallbacks (a sweep's pruning); one
    may raise Cancelled to stop the run as `cancelled`.
    """
    check_config(cfg)
    precision = resolve_precision(cfg.precision)  # refused here, before a job exists, if unsupported
    is_main = int(os.environ.get("RANK", "0")) == 0
    out = cfg.resolved_output_dir()
    claim = OutputDirClaim(out, cfg.job_name).acquire() if is_main else None
    try:
        return _run(
            cfg, out, store_uri, resume, overwrite_output_dir, say, is_main, aws, job, precision, callbacks or []
        )
    finally:
        if claim:
            claim.release()


def _run(
    cfg: TrainConfig,
    out: Path,
    store_uri,
    resume: bool,
    overwrite: bool,
    say,
    is_main: bool,
    aws: AwsSettings | None,
    job=None,
    precision: str = "fp32",
    callbacks: list = (),
) -> dict:
    previous = None
    if is_main:
        if job is not None:
            previous = previous_run_of(job.job_id, out, cfg, overwrite)
        else:
            previous = check_output_dir(out, cfg, resume, overwrite)
    else:
        job = None
    store = run_file = s3 = None
    if is_main:
        from ..store import open_store

        store = open_store(store_uri, aws)
        if cfg.output_s3_uri:
            from ..s3 import S3Sync

            s3 = S3Sync(cfg.output_s3_uri, cfg.job_name, aws)
            s3.check()
        if job is not None and s3 and not job.storage:
            job.storage = s3.storage
        if previous:
            job = job or store.get_job(previous["job_id"])
            if job is None:
                raise UserError(
                    f"--resume: job {previous['job_id']} of {out}/run.json is not in "
                    f"{store.description}; pass the --job-store it was recorded in."
                )
    # Everything that can be refused is checked before a job is created or changed.
    inputs = build_inputs(cfg, previous, out, aws)
    if is_main:
        if previous:
            run_file = RunFile(out / "run.json", previous)
        else:
            job = job or store.create_job(
                cfg.job_name,
                config_record(cfg, resume, precision, inputs.data.split),
                description=cfg.description,
                priority=cfg.priority,
                storage=s3.storage if s3 else None,
            )
            run_file = RunFile(
                out / "run.json",
                {
                    "job_id": job.job_id,
                    "job_name": cfg.job_name,
                    "job_store": store.description,
                    "status": "pending",
                    "config": asdict(cfg),
                },
            )
            run_file.save()
        if any(job.job_config.get(k) != v for k, v in split_record(inputs.data.split).items()):
            job.job_config.update(split_record(inputs.data.split))  # a queued job: written with the next status
        if previous and Journal.of(out).pending:
            # Writes an earlier run of this job could not make while the store was away: first, in order.
            flushed = Journal.of(out).flush(store)
            say(f"job store: {flushed.written} journaled write(s) of the previous run flushed from {out}")
        store.heartbeat(job)  # this process runs it now: host, pid, time
    stop = StopRequest()
    resuming = resume or bool(previous)
    recorder = Recorder(store, job, run_file, s3, Journal.of(out) if is_main else None)
    run = TrainingRun(cfg, recorder, inputs, out, resuming, say, is_main, stop, precision)
    run.extra_callbacks = list(callbacks)
    old_handler = signal.signal(signal.SIGTERM, stop)
    try:
        summary = run.train()
    except (KeyboardInterrupt, Interrupted) as e:
        run.finish_stopped("interrupted", f"interrupted: {e or 'KeyboardInterrupt'}")
        raise UserError(
            f"Training interrupted; job {job.job_id if job else ''} is marked interrupted{journaled(recorder)}. "
            "Continue it with the same command plus --resume."
        ) from None
    except LeaseLost as e:
        # Declared stale and claimed by another worker: that run owns the job now; record nothing more.
        raise UserError(f"Training stopped: {e}.") from None
    except Cancelled as e:
        run.finish_stopped("cancelled", f"cancelled: {e}")
        raise UserError(
            f"Training cancelled ({e}); job {job.job_id if job else ''} is marked cancelled{journaled(recorder)}."
        ) from None
    except UserError as e:
        run.finish_stopped("failed", str(e))
        note = journaled(recorder)
        if note:
            raise UserError(f"{str(e).rstrip('.')}{note}.") from None
        raise
    except Exception as e:
        run.finish_stopped("failed", f"{type(e).__name__}: {e}", traceback.format_exc())
        raise
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    upload_errors = run.recorder.upload_errors
    if upload_errors:  # training succeeded; the failed uploads still fail the command
        raise UserError(
            f"Training finished but {len(upload_errors)} S3 upload(s) failed "
            f"(first: {upload_errors[0]}); best/ is in {summary['best_dir']}{journaled(recorder)}."
        )
    note = journaled(recorder)
    if note:  # the store does not tell the truth yet: the command must not say all is well
        raise UserError(f"Training finished and best/ is in {summary['best_dir']}{note}.")
    return summary


def metric_key(name: str) -> str:
    """The key compute_metrics gives a --checkpoint-metric under (the Trainer adds eval_)."""
    if name == "val_f1":
        return "f1"
    if name.startswith("macro:"):
        return "macro_" + "_".join(checkpoint_metric_labels(name)) + "_f1"
    return name


def with_checkpoint_metric(scores: dict, name: str) -> dict:
    """entity_scores plus the macro F1 of a macro:A,B,... metric (the mean of those labels' F1)."""
    if name.startswith("macro:"):
        labels = checkpoint_metric_labels(name)
        scores[metric_key(name)] = sum(scores[f"label_{t}_f1"] for t in labels) / len(labels)
    return scores


def journaled(recorder: Recorder) -> str:
    """'' when every write reached the store; else how the journal left in the output dir gets there."""
    if recorder.journal is None or recorder.flush(force=True):
        return ""
    n, out, store = len(recorder.journal.entries()), recorder.journal.path.parent, recorder.store.description
    return (
        f"; the job store {store} was unreachable, so {n} write(s) wait in {recorder.journal.path}: they are "
        f"written when this job next runs in {out}, or now with `layoutlm-cli jobs flush-journal {out} "
        f"--job-store {store}`"
    )


@dataclass
class RunInputs:
    """What a run trains and validates on, built before its job exists."""

    data: PreparedData
    source: str
    tokenizer: object
    model: object
    train_ex: list[dict]
    val_ex: list[dict]
    val_windows: list
    val_true: list[list[str]]


def build_inputs(cfg: TrainConfig, previous: dict | None, out: Path, aws: AwsSettings | None = None) -> RunInputs:
    """Load and prepare the data, load the model, tokenise: every error here is the user's to fix."""
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # weight-saving bars; the training bar stays
    data, report = prepare_config_data(cfg, aws)
    if cfg.box_level == "line":
        for r in data.train + data.val:
            r.boxes = line_boxes(r.boxes, r.lines)
    label_list = data.label_list
    if previous and previous.get("label_list") and previous["label_list"] != label_list:
        raise UserError(
            f"--resume: the checkpoints in {out} were trained with labels {previous['label_list']}, "
            f"but this run's data and flags give {label_list}; resume with the original flags."
        )
    label2id = {t: i for i, t in enumerate(label_list)}
    transformers.set_seed(cfg.seed)  # fresh weights (classifier, box embeddings) are part of the run
    tokenizer, model = load_model(cfg.pretrained, label_list)

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
    val_true = [s["tags"] for s in val_seqs]
    return RunInputs(data, report.source, tokenizer, model, train_ex, val_ex, val_windows, val_true)


class TrainingRun:
    """One run once its job exists. The Trainer it builds stays on the object, so that a run
    stopped early can still write best/ from its best checkpoint."""

    def __init__(
        self,
        cfg: TrainConfig,
        recorder: Recorder,
        inputs: RunInputs,
        out: Path,
        resume: bool,
        say,
        is_main,
        stop,
        precision: str = "fp32",
    ):
        self.cfg, self.recorder, self.inputs, self.out, self.resume = cfg, recorder, inputs, out, resume
        self.say, self.is_main, self.stop = say, is_main, stop
        self.precision = precision  # resolved: fp32, bf16 or fp16
        self.trainer = None
        self.extra_callbacks: list = []
        self.confusions: dict[int, dict] = {}  # step -> word-level confusion of that evaluation

    def model_settings(self, best_f1, best_metric=None) -> dict:
        """What best/label_map.json carries besides the labels: prediction windows and scores receipts
        as this run did, and a proposal names the job it came from (also for a run stopped early)."""
        cfg, job = self.cfg, self.recorder.job
        return {
            "best_f1": best_f1,
            "best_metric_name": cfg.checkpoint_metric,
            "best_metric": best_metric,
            "job_id": job.job_id if job else None,
            "example_unit": cfg.example_unit,
            "max_seq_length": cfg.max_seq_length,
            "window_overlap": cfg.window_overlap,
            "merge_amounts": cfg.merge_amounts,
            "allowed_labels": cfg.allowed_labels,
            "box_level": cfg.box_level,
            "decode": cfg.decode,
        }

    def finish_stopped(self, status: str, message: str, exc: str | None = None) -> None:
        """A run that did not finish still leaves its best model, its reason and its status."""
        recorder, trainer = self.recorder, self.trainer
        if recorder.store is None:
            return
        if trainer is not None and trainer.state.best_model_checkpoint:
            best = Path(trainer.state.best_model_checkpoint)
            if best.exists():
                copy_checkpoint_as_best(
                    best,
                    Path(trainer.args.output_dir) / "best",
                    self.inputs.tokenizer,
                    self.inputs.data.label_list,
                    self.model_settings(best_f1_of(trainer.state), trainer.state.best_metric),
                )
        recorder.log("ERROR" if status == "failed" else "WARNING", message, exception=exc)
        recorder.status(status, message=message[:500])
        if recorder.run_file:
            recorder.run_file.update(status=status, error=message)
            recorder.upload(recorder.run_file.path, "logs_prefix", "run.json")

    def train(self) -> dict:
        cfg, recorder, inputs, out, stop = self.cfg, self.recorder, self.inputs, self.out, self.stop
        data, label_list, train_ex = inputs.data, inputs.data.label_list, inputs.train_ex
        id2label = dict(enumerate(label_list))
        started = time.time()
        if self.is_main:
            _record_start(cfg, recorder, data, inputs.source, self.resume)
            recorder.run_file.update(precision_resolved=self.precision)
        self.say(
            f"job {recorder.job.job_id if recorder.job else '(rank > 0)'}: {len(data.train)} train / "
            f"{len(data.val)} val receipts, {len(train_ex)} train examples, {len(label_list)} tags, {self.precision}"
        )
        if data.split.get("val_keys_not_in_data"):
            self.say(
                f"--val-keys: {data.split['val_keys_not_in_data']} of {data.split['val_keys_count']} ids "
                "are not in the data (ignored)"
            )

        def compute_metrics(pred):
            val_true = inputs.val_true
            n_words = [len(t) for t in val_true]
            tags = merge_predictions(pred.predictions, inputs.val_windows, n_words, id2label, cfg.decode)
            scores = entity_scores(val_true, tags, entity_types(label_list))
            # Kept by step; the best evaluation's is recorded when the run ends (finish).
            self.confusions[self.trainer.state.global_step] = word_confusion(val_true, tags, entity_types(label_list))
            return with_checkpoint_metric(scores, cfg.checkpoint_metric)

        world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's processes
        steps_per_epoch = math.ceil(len(train_ex) / (cfg.batch_size * cfg.gradient_accumulation_steps * world_size))
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
            metric_for_best_model=metric_key(cfg.checkpoint_metric),
            greater_is_better=True,
            save_total_limit=cfg.save_total_limit,
            seed=cfg.seed,
            data_seed=cfg.seed,
            train_sampling_strategy="group_by_length",
            dataloader_num_workers=cfg.num_workers,
            report_to="none",
            dataloader_pin_memory=torch.cuda.is_available(),
            ddp_find_unused_parameters=True,  # the pooler takes no part in token classification
            # Without CUDA, accelerate runs torchrun's processes as real DDP (gloo) only when told to use
            # the CPU; else each process trains alone on all the data.
            use_cpu=world_size > 1 and not torch.cuda.is_available(),
            disable_tqdm=not self.is_main,
            **precision_flags(self.precision, torch.cuda.is_available()),
        )
        callbacks = [RecordingCallback(recorder, label_list, cfg.epochs), StopOnSignal(stop, recorder)]
        callbacks += self.extra_callbacks
        if cfg.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
        tokenizer = inputs.tokenizer
        trainer = ReceiptTrainer(
            model=inputs.model,
            args=args,
            train_dataset=train_ex,
            eval_dataset=inputs.val_ex,
            processing_class=tokenizer,
            data_collator=Collator(tokenizer.pad_token_id, 8 if torch.cuda.is_available() else None),
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            preprocess_logits_for_metrics=scores_for_metrics(cfg.decode),
            cpu_bf16=self.precision == "bf16" and not torch.cuda.is_available(),
        )
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)  # other ranks would print every log dict
        if self.is_main:
            trainer.add_callback(QuietProgress(self.say))
        self.trainer = trainer
        recorder.status("running", message="resumed" if self.resume else "training started", progress=0)
        resume_from = latest_checkpoint(out) if self.resume else None
        if stop.requested:
            raise Interrupted("received SIGTERM before training started")
        train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        if stop.cancelled:
            raise Cancelled(f"on request, checkpoint-{trainer.state.global_step} saved")
        if stop.requested:
            raise Interrupted(f"received SIGTERM; checkpoint-{trainer.state.global_step} saved")
        return self.finish(train_output, started)

    def finish(self, train_output, started: float) -> dict:
        """Results from the evaluations, best/ from the best weights, the job marked succeeded."""
        cfg, recorder, trainer, label_list = self.cfg, self.recorder, self.trainer, self.inputs.data.label_list
        state = trainer.state
        evals = [h for h in state.log_history if "eval_f1" in h]
        if not evals:
            raise UserError("Training ended before any evaluation; raise --epochs or --max-steps.")
        key = "eval_" + metric_key(cfg.checkpoint_metric)
        best = max(evals, key=lambda h: h[key])  # first of equals, like the Trainer's choice
        best_dir = self.out / "best"
        results = {
            "best_metric_name": cfg.checkpoint_metric,
            "best_metric": best[key],
            "best_f1": best["eval_f1"],
            "best_precision": best["eval_precision"],
            "best_recall": best["eval_recall"],
            "best_epoch": epoch_number(best["epoch"]),
            "best_step": best["step"],
            "epochs_completed": len({epoch_number(h["epoch"]) for h in evals}),
            "stopped_early": state.global_step < state.max_steps,
            "label_list": label_list,
            "train_runtime": round(time.time() - started, 2),
            "train_loss": float(train_output.training_loss),
            "best_dir": str(best_dir),
            "best_checkpoint": state.best_model_checkpoint,
        }
        if self.is_main:
            # load_best_model_at_end put the best weights back into trainer.model.
            save_model_dir(
                best_dir,
                trainer.model,
                self.inputs.tokenizer,
                label_list,
                self.model_settings(results["best_f1"], results["best_metric"]),
            )
            recorder.upload(
                best_dir,
                "best_prefix",
                checkpoint_step=results["best_step"],
                epoch=results["best_epoch"],
                is_best=True,
                metrics={"val_f1": results["best_f1"]},
            )
            # With --save-total-limit 1 the Trainer deleted the last checkpoint at the end (it keeps the best).
            recorder.prune_s3_checkpoints(self.out, state.best_model_checkpoint)
            confusion = self.confusions.get(results["best_step"])  # none when that evaluation ran before a resume
            if confusion:
                row = {"name": "confusion_matrix", "value": confusion, "unit": "matrix"}
                recorder.metrics([{**row, "step": results["best_step"], "epoch": results["best_epoch"]}])
            _record_end(recorder, results)
        return {"job_id": recorder.job.job_id if recorder.job else None, **results}


def best_f1_of(state) -> float | None:
    """The entity micro F1 of the Trainer's best checkpoint (its best_metric may be another metric)."""
    step = int(Path(state.best_model_checkpoint).name.split("-")[-1])
    return next((h["eval_f1"] for h in state.log_history if "eval_f1" in h and h["step"] == step), None)


def scores_for_metrics(decode: str):
    """What evaluation keeps of the logits: argmax ids, or (for --decode bio) log-probabilities, which
    the Viterbi decoding needs; float32 so that half-precision logits do not lose the small ones."""
    if decode == "bio":
        return lambda logits, labels: logits.float().log_softmax(-1)
    return lambda logits, labels: logits.argmax(-1)


def _record_start(cfg: TrainConfig, recorder: Recorder, data: PreparedData, source: str, previous) -> None:
    counts, thin = data.counts, data.thinning
    recorder.run_file.data.pop("error", None)  # a resumed run is no longer the failure it was
    recorder.run_file.update(
        status="running",
        config=asdict(cfg),
        label_list=data.label_list,
        dataset={"source": source, "dropped_by_reader": data.dropped, **counts},
        split={**data.split, "val_receipt_ids": counts["val_receipt_ids"]},
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
                "split": data.split,
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
        message=f"best {results['best_metric_name']} {results['best_metric']:.4f} at epoch {results['best_epoch']}",
        progress=100,
        **{k: v for k, v in results.items() if v is not None},
    )
