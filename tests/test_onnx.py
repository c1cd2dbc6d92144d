"""ONNX export: same labels as PyTorch (fp32), >= 99% agreement (int8), dynamic shapes, CLI and predict."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from receipt_layoutlm.cli import cli
from receipt_layoutlm.inference.onnx import OnnxTokenClassifier, predict_ids
from receipt_layoutlm.inference.words import load_model_dir, predict_words
from receipt_layoutlm.sources import load_receipts


@pytest.fixture(scope="module")
def onnx_dir(tiny_best, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    result = CliRunner().invoke(cli, ["export", str(tiny_best), "--onnx", "--quantize", "int8", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _labels(model_dir, receipts, precision="auto"):
    return [[w.label for w in r] for r in predict_words(load_model_dir(model_dir, precision), receipts)]


def test_export_is_self_contained(onnx_dir, tiny_best):
    names = {p.name for p in onnx_dir.iterdir()}
    assert {"model.onnx", "model.int8.onnx", "label_map.json", "config.json", "tokenizer.json"} <= names
    assert not any(n.endswith(".safetensors") for n in names)
    assert json.loads((onnx_dir / "label_map.json").read_text()) == json.loads(
        (tiny_best / "label_map.json").read_text()
    )
    info = json.loads((onnx_dir / "export.json").read_text())
    assert info["files"] == ["model.onnx", "model.int8.onnx"] and info["quantize"] == "int8"
    # Batch and sequence are symbolic in the graph, not the sizes of the export's example.
    session = OnnxTokenClassifier(onnx_dir, "fp32").session
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert set(shapes) == {"input_ids", "bbox", "attention_mask"}
    assert all(isinstance(d, str) for d in shapes["input_ids"]) and shapes["bbox"][2] == 4


def test_fp32_gives_the_pytorch_labels_and_int8_agrees(onnx_dir, tiny_best):
    receipts, _ = load_receipts("demo:40")
    torch_labels = _labels(tiny_best, receipts)
    assert len({t for r in torch_labels for t in r}) > 2  # a trained model, not one answer everywhere
    assert _labels(onnx_dir, receipts, "fp32") == torch_labels
    int8 = _labels(onnx_dir, receipts, "int8")
    pairs = [(a, b) for ra, rb in zip(torch_labels, int8) for a, b in zip(ra, rb)]
    assert sum(a == b for a, b in pairs) / len(pairs) >= 0.99


def test_logits_match_pytorch_for_other_batch_and_sequence_sizes(onnx_dir, tiny_best):
    import torch

    from receipt_layoutlm.model import load_trained

    _, model = load_trained(tiny_best)
    runner = OnnxTokenClassifier(onnx_dir, "fp32")
    rng = np.random.default_rng(0)
    for batch, seq in ((1, 3), (5, 64), (3, 200)):
        feed = {
            "input_ids": rng.integers(1000, 5000, (batch, seq)),
            "bbox": np.sort(rng.integers(0, 1000, (batch, seq, 4)), -1),
            "attention_mask": np.ones((batch, seq), dtype=np.int64),
        }
        feed["attention_mask"][0, seq // 2 + 1 :] = 0
        with torch.no_grad():
            expected = model(**{k: torch.from_numpy(v).long() for k, v in feed.items()}).logits.numpy()
        assert np.abs(runner.logits(feed) - expected).max() < 1e-3


def test_onnx_predict_ids_has_the_pytorch_contract(onnx_dir, tiny_best):
    from receipt_layoutlm.model import load_trained
    from receipt_layoutlm.model import predict_ids as torch_predict_ids

    _, model = load_trained(tiny_best)
    examples = []
    for n in (5, 2, 9):  # unsorted lengths: results must come back in input order
        examples.append(
            {
                "input_ids": [101] + [2000 + 7 * k for k in range(n)] + [102],
                "bbox": [[0, 0, 0, 0]] + [[10 * k, 10, 10 * k + 40, 20] for k in range(n)] + [[1000] * 4],
                "attention_mask": [1] * (n + 2),
            }
        )
    got = predict_ids(OnnxTokenClassifier(onnx_dir, "fp32"), examples, batch_size=2)
    assert [len(r) for r in got] == [len(e["input_ids"]) for e in examples]
    # model.predict_ids returns rows padded to the batch; positions past an example's end mean nothing.
    expected = torch_predict_ids(model, examples, batch_size=2, device="cpu")
    assert got == [row[: len(e["input_ids"])] for row, e in zip(expected, examples)]


def test_predict_command_runs_the_onnx_export(onnx_dir, tiny_best, tmp_path):
    runner = CliRunner()
    a = runner.invoke(
        cli, ["predict", "--model", str(onnx_dir), "--dataset", "demo:5", "--output", str(tmp_path / "a")]
    )
    b = runner.invoke(
        cli, ["predict", "--model", str(tiny_best), "--dataset", "demo:5", "--output", str(tmp_path / "b")]
    )
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    # Default precision of an export with int8 is int8: most, not necessarily all, labels equal fp32's.
    rows_a = [json.loads(line) for line in (tmp_path / "a").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (tmp_path / "b").read_text().splitlines()]
    labels_a = [w.get("label", "O") for r in rows_a for w in r["words"]]
    labels_b = [w.get("label", "O") for r in rows_b for w in r["words"]]
    assert len(labels_a) == len(labels_b) and sum(x == y for x, y in zip(labels_a, labels_b)) / len(labels_a) >= 0.99


@pytest.mark.parametrize(
    "args, message",
    [
        (["--onnx", "--coreml"], "exactly one of --onnx or --coreml"),
        (["--onnx", "--quantize", "int8"], "no such directory"),
    ],
)
def test_export_refuses_in_one_sentence(tmp_path, args, message):
    model_dir = tmp_path / "missing"
    if message != "no such directory":
        model_dir.mkdir()
    result = CliRunner().invoke(cli, ["export", str(model_dir), *args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_export_of_a_folder_without_a_model_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "empty"), "--onnx", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "label_map.json" in result.output and not (tmp_path / "out").exists()
