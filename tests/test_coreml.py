"""export --coreml on Linux: declared inputs/outputs/shapes and a deterministic conversion (no predictions here)."""

import json

import pytest
from click.testing import CliRunner

from receipt_layoutlm.cli import cli

ct = pytest.importorskip("coremltools")


def export(model_dir, out, *extra):
    result = CliRunner().invoke(cli, ["export", str(model_dir), "--coreml", *extra, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_coreml_export_declares_ranged_inputs_and_converts_deterministically(tiny_best, tmp_path):
    a = export(tiny_best, tmp_path / "a")
    b = export(tiny_best, tmp_path / "b")
    spec = ct.utils.load_spec(str(a / "model.mlpackage"))
    inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert list(inputs) == ["input_ids", "bbox", "attention_mask"]
    int32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
    for name, array in inputs.items():
        assert array.dataType == int32
        ranges = [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges]
        assert ranges[:2] == [(1, 1), (2, 64)]  # batch 1, sequence 2..training max_seq_length (64)
        assert len(ranges) == (3 if name == "bbox" else 2)
    assert [o.name for o in spec.description.output] == ["logits"]
    info = json.loads((a / "coreml.json").read_text())
    labels = len(json.loads((tiny_best / "label_map.json").read_text())["label_list"])
    assert info["max_sequence"] == 64 and info["output"]["logits"] == ["1", "S", str(labels)]
    assert (a / "tokenizer.json").exists() and (a / "label_map.json").exists()

    # Same model in, same bytes out (the program and its weights).
    data = "model.mlpackage/Data/com.apple.CoreML"
    for part in ("model.mlmodel", "weights/weight.bin"):
        assert (a / data / part).read_bytes() == (b / data / part).read_bytes(), part


def test_coreml_int8_weights_and_sequence_range(tiny_best, tmp_path):
    fp16 = export(tiny_best, tmp_path / "fp16", "--max-seq-length", "32")
    int8 = export(tiny_best, tmp_path / "int8", "--quantize", "int8", "--max-seq-length", "32")
    weights = "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    assert (int8 / weights).stat().st_size < (fp16 / weights).stat().st_size
    spec = ct.utils.load_spec(str(int8 / "model.mlpackage"))
    assert spec.description.input[0].type.multiArrayType.shapeRange.sizeRanges[1].upperBound == 32
    assert "int8 weights" in json.loads((int8 / "coreml.json").read_text())["precision"]


def test_coreml_refuses_a_too_long_sequence(tiny_best, tmp_path):
    result = CliRunner().invoke(
        cli, ["export", str(tiny_best), "--coreml", "--max-seq-length", "4096", "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "between 2 and 512" in result.output and not (tmp_path / "x").exists()
