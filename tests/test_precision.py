"""--precision: which one a run uses on which hardware, and bf16 training on a CPU that has it."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from receipt_layoutlm.cli import cli
from receipt_layoutlm.errors import UserError
from receipt_layoutlm.store import open_store
from receipt_layoutlm.training import run as train_run
from receipt_layoutlm.training.run import cpu_has_native_bf16, precision_flags, resolve_precision

ZEN4 = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_bf16": False}
SAPPHIRE_RAPIDS = {"architecture": "x86_64", "avx512_f": True, "avx512_bf16": True, "amx_bf16": True}
SKYLAKE = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bw": True, "avx512_bf16": False}
HASWELL = {"architecture": "x86_64", "avx2": True}
GRAVITON3 = {"architecture": "aarch64", "neon": True, "bf16": True}


def test_native_bf16_means_the_bf16_instructions_not_just_avx512():
    assert cpu_has_native_bf16(ZEN4) and cpu_has_native_bf16(SAPPHIRE_RAPIDS) and cpu_has_native_bf16(GRAVITON3)
    assert not cpu_has_native_bf16(SKYLAKE) and not cpu_has_native_bf16(HASWELL)


def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_elsewhere():
    assert resolve_precision("auto", cuda=False, cpu_bf16=cpu_has_native_bf16(ZEN4)) == "bf16"
    assert resolve_precision("auto", cuda=False, cpu_bf16=cpu_has_native_bf16(SKYLAKE)) == "fp32"
    assert resolve_precision("auto", cuda=True, cuda_bf16=True) == "bf16"
    assert resolve_precision("auto", cuda=True, cuda_bf16=False) == "fp16"
    assert resolve_precision("fp32", cuda=False, cpu_bf16=True) == "fp32"
    assert resolve_precision("bf16", cuda=False, cpu_bf16=True) == "bf16"
    assert resolve_precision("fp16", cuda=True, cuda_bf16=True) == "fp16"


def test_cpu_refuses_fp16_and_bf16_without_the_hardware():
    with pytest.raises(UserError, match=r"^--precision fp16 needs a CUDA GPU; use --precision auto or fp32 on CPU\.$"):
        resolve_precision("fp16", cuda=False, cpu_bf16=True)
    with pytest.raises(UserError, match=r"^--precision bf16 needs a CUDA GPU or a CPU with native bf16"):
        resolve_precision("bf16", cuda=False, cpu_bf16=False)


def test_training_arguments_get_mixed_precision_on_a_gpu_only():
    # On a CPU the trainer autocasts the training forward itself (evaluation stays fp32).
    assert precision_flags("bf16", cuda=True) == {"bf16": True}
    assert precision_flags("fp16", cuda=True) == {"fp16": True}
    assert precision_flags("bf16", cuda=False) == {} and precision_flags("fp32", cuda=True) == {}


def train(tmp_path, precision, epochs=2):
    args = ["train", "--job-name", f"p-{precision}", "--dataset", "demo:24", "--pretrained", "tiny"]
    args += ["--epochs", str(epochs), "--batch-size", "4", "--lr", "5e-4", "--max-seq-length", "128"]
    args += ["--window-overlap", "32", "--precision", precision, "--output-dir", str(tmp_path / precision)]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusals")
def test_unsupported_precision_is_refused_before_a_job_exists(env, monkeypatch):
    monkeypatch.setattr(train_run, "cpu_has_native_bf16", lambda capabilities=None: False)
    for precision in ("fp16", "bf16"):
        result = train(env, precision)
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert f"--precision {precision} needs a CUDA GPU" in result.output
        assert len(result.output.strip().splitlines()) <= 2, result.output
        assert not (env / precision).exists()
    assert open_store().list_jobs() == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 on the CPU; a GPU run uses accelerate's autocast")
@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16, AMX-BF16 or ARM BF16)")
def test_bf16_on_the_cpu_trains_in_bf16_and_evaluates_in_fp32(env):
    seen = {"train": set(), "eval": set()}

    def record_dtype(module, inputs, output):
        if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor):
            seen["train" if module.training else "eval"].add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record_dtype)
    try:
        result = train(env, "bf16")
    finally:
        hook.remove()
    assert result.exit_code == 0, result.output
    assert seen == {"train": {torch.bfloat16}, "eval": {torch.float32}}

    (job,) = open_store().list_jobs("succeeded")
    assert job.job_config["precision"] == "bf16" and job.job_config["precision_resolved"] == "bf16"
    run_json = json.loads((env / "bf16" / "run.json").read_text())
    assert run_json["precision_resolved"] == "bf16" and run_json["status"] == "succeeded"
    for entry in run_json["epoch_metrics"]:
        for key in ("val_f1", "eval_loss", "train_loss"):
            assert math.isfinite(entry[key]), (key, entry)
    assert math.isfinite(job.results["train_loss"]) and 0 <= job.results["best_f1"] <= 1


def test_predict_ids_runs_in_inference_mode():
    from receipt_layoutlm.model import load_model, predict_ids

    _, model = load_model("tiny", ["O", "B-DATE", "I-DATE"])
    modes = []
    hook = model.register_forward_hook(lambda m, i, o: modes.append(torch.is_inference_mode_enabled()))
    example = {"input_ids": [101, 2000, 102], "bbox": [[0, 0, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]]}
    example["attention_mask"] = [1, 1, 1]
    ids = predict_ids(model, [example, {**example, "labels": [-100, 1, -100]}], device="cpu")
    hook.remove()
    assert modes == [True] and len(ids) == 2 and len(ids[0]) == 3
