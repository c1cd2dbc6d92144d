"""`jobs report JOB -o DIR`: a self-contained page that Chromium renders with every image decoded,
and real PNGs of the expected size."""

import base64
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from PIL import Image

from receipt_layoutlm.cli import cli
from receipt_layoutlm.store import open_store


@pytest.fixture
def recorded_job(tmp_path, monkeypatch):
    """A finished job with the metrics a run records: 3 evaluations, losses, learning rate, labels, counts."""
    monkeypatch.setenv("LAYOUTLM_JOB_STORE", f"sqlite:///{tmp_path / 'jobs.db'}")
    store = open_store()
    job = store.create_job("receipts-<full> & co", {"dataset": "demo:40", "epochs": 3, "merge_amounts": True})
    store.update_job(job, "running")
    rows = []
    for epoch in (1, 2, 3):
        step = 10 * epoch
        rows += [
            {"name": "val_f1", "value": 0.2 * epoch, "step": step, "epoch": epoch, "unit": "ratio"},
            {"name": "val_precision", "value": 0.25 * epoch, "step": step, "epoch": epoch, "unit": "ratio"},
            {"name": "val_recall", "value": 0.15 * epoch, "step": step, "epoch": epoch, "unit": "ratio"},
            {"name": "eval_loss", "value": 2.0 / epoch, "step": step, "epoch": epoch, "unit": "loss"},
            {"name": "label_DATE_f1", "value": 0.3 * epoch, "step": step, "epoch": epoch, "unit": "ratio"},
            {"name": "label_AMOUNT_f1", "value": 0.1 * epoch, "step": step, "epoch": epoch, "unit": "ratio"},
        ]
        for s in range(step - 9, step + 1, 3):
            rows += [
                {"name": "train_loss", "value": 3.0 / s**0.5, "step": s, "epoch": epoch, "unit": "loss"},
                {"name": "learning_rate", "value": 1e-4 * (1 - s / 30), "step": s, "epoch": epoch, "unit": "rate"},
            ]
    rows += [
        {"name": "dataset_train_receipts", "value": 36, "step": 0, "epoch": 0, "unit": "count"},
        {"name": "dataset_val_receipts", "value": 4, "step": 0, "epoch": 0, "unit": "count"},
    ]
    store.add_metrics(job.job_id, rows)
    job.results = {"best_f1": 0.6, "best_epoch": 3, "best_step": 30, "best_dir": "/tmp/x/best"}
    store.update_job(job, "succeeded", message="done")
    return job, tmp_path


def test_report_page_and_pngs(recorded_job):
    job, tmp_path = recorded_job
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["jobs", "report", job.name, "-o", str(out)])
    assert result.exit_code == 0, result.output
    sizes = {p.name: Image.open(p).size for p in out.glob("*.png")}
    assert sizes == {
        "scores.png": (800, 450),
        "loss.png": (800, 450),
        "learning_rate.png": (800, 450),
        "per_label_f1.png": (800, 450),
        "overview.png": (1600, 450),
    }
    for p in out.glob("*.png"):
        Image.open(p).load()  # decodes fully: a real image, not just a header
    page = (out / "index.html").read_text()
    # The page carries those very PNGs inline.
    inline = {base64.b64decode(src) for src in re.findall(r'src="data:image/png;base64,([^"]+)"', page)}
    assert inline == {p.read_bytes() for p in out.glob("*.png")}
    # Self-contained: no link, script or image that needs the network or the files beside it.
    assert "http://" not in page and "https://" not in page and 'src="data:image/png;base64,' in page
    assert page.count("<img ") == 5
    for text in (
        "receipts-&lt;full&gt; &amp; co",
        "succeeded",
        "no confusion matrix",
        "train_receipts",
        "merge_amounts",
    ):
        assert text in page, text

    # A run records its best evaluation's confusion matrix (training/run.py): the page shows it.
    matrix = {"labels": ["O", "DATE", "AMOUNT"], "matrix": [[50, 1, 2], [3, 9, 0], [4, 0, 17]]}
    open_store().add_metrics(job.job_id, [{"name": "confusion_matrix", "value": matrix, "unit": "matrix"}])
    result = CliRunner().invoke(cli, ["jobs", "report", job.name, "-o", str(tmp_path / "report2")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report2" / "index.html").read_text()
    assert "no confusion matrix" not in page and "reference \\ predicted" in page and "<td>17</td>" in page


def test_report_renders_in_headless_chromium(recorded_job):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package `chromium`); the page is not rendered")
    job, tmp_path = recorded_job
    out = tmp_path / "report"
    assert CliRunner().invoke(cli, ["jobs", "report", job.job_id, "-o", str(out)]).exit_code == 0
    # The same page plus a probe that records, after load, how many images Chromium could not decode
    # (an image that fails has naturalWidth 0; checked by hand with a corrupt data URI).
    probe = tmp_path / "probe.html"
    probe.write_text(
        (out / "index.html")
        .read_text()
        .replace(
            "</body>",
            "<script>window.addEventListener('load', () => {const bad = [...document.images]"
            ".filter(i => !(i.complete && i.naturalWidth > 0)).length;"
            "document.body.setAttribute('data-images', document.images.length);"
            "document.body.setAttribute('data-broken', bad);});</script></body>",
        )
    )
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'data-images="5"' in dom and 'data-broken="0"' in dom, dom[-500:]
    assert "<h1>receipts-&lt;full&gt; &amp; co</h1>" in dom


def test_report_of_a_job_without_metrics_and_a_file_as_output(recorded_job):
    _, tmp_path = recorded_job
    store = open_store()
    fresh = store.create_job("just-created", {})
    out = tmp_path / "fresh"
    result = CliRunner().invoke(cli, ["jobs", "report", fresh.job_id, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "no best model yet" in (out / "index.html").read_text()
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(cli, ["jobs", "report", fresh.job_id, "-o", str(tmp_path / "file")])
    assert result.exit_code == 2 and "Traceback" not in result.output
