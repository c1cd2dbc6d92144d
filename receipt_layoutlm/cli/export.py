"""`layoutlm-cli export MODEL_DIR --onnx|--coreml -o OUT`."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from .common import console, with_store_opener


@click.command()
@click.argument("model_ref")
@click.option("--onnx", "to_onnx", is_flag=True, help="ONNX model for ONNX Runtime (dynamic batch and sequence).")
@click.option("--coreml", "to_coreml", is_flag=True, help="Core ML ML Program (.mlpackage), fp16, for iOS/macOS.")
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    help="ONNX: also write model.int8.onnx (dynamic int8); Core ML: int8 weights.",
)
@click.option(
    "--max-seq-length",
    type=int,
    help="Core ML: the longest sequence the model accepts (default: the model's training --max-seq-length).",
)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder to write.")
@with_store_opener
def export(model_ref, to_onnx, to_coreml, quantize, max_seq_length, out_dir, open_store, aws):
    """Export a trained model (a run's best/ folder, or a job name/id: its best/) for fast CPU or on-device
    inference."""
    from ..inference.resolve import resolve_model_dir

    if to_onnx == to_coreml:
        raise UserError("Pass exactly one of --onnx or --coreml.")
    model_dir = resolve_model_dir(model_ref, open_store, aws=aws)
    if to_onnx:
        if max_seq_length is not None:
            raise UserError("--max-seq-length applies to --coreml only; ONNX exports take any length up to 512.")
        from ..inference.onnx import export_onnx

        info = export_onnx(model_dir, out_dir, quantize)
        console.print(f"ONNX model ({', '.join(info['files'])}) with tokenizer and label map -> {out_dir}")
        return
    from ..inference.coreml import export_coreml

    info = export_coreml(model_dir, out_dir, quantize, max_seq_length)
    console.print(
        f"Core ML model {info['file']} (sequence length {info['min_sequence']}-{info['max_sequence']}, "
        f"{info['precision']}) with tokenizer and label map -> {out_dir}"
    )
