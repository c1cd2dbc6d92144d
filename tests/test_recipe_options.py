"""--box-level line and --decode bio: the pure functions on crafted inputs, a tiny run that records
both, and a tagger that applies what its best/ recorded."""

import json

import numpy as np
import pytest
from conftest import run_cli
from test_tagger import LABELS, make_model_dir

from receipt_layoutlm.inference.tagger import ReceiptTagger
from receipt_layoutlm.sources import load_receipts
from receipt_layoutlm.training.decoding import allowed_transitions, decode_words, viterbi
from receipt_layoutlm.training.features import Window, merge_predictions
from receipt_layoutlm.training.recipe import line_boxes

ID2LABEL = dict(enumerate(LABELS))


def bio_valid(tags: list[str]) -> bool:
    return all(not t.startswith("I-") or (i > 0 and tags[i - 1] in (f"B-{t[2:]}", t)) for i, t in enumerate(tags))


def scores_for(tags: list[str], confidence: float = 0.9) -> np.ndarray:
    """Log-probabilities that make argmax choose `tags`."""
    rest = (1 - confidence) / (len(LABELS) - 1)
    rows = np.full((len(tags), len(LABELS)), rest)
    for i, t in enumerate(tags):
        rows[i, LABELS.index(t)] = confidence
    return np.log(rows)


def test_line_boxes_are_the_union_of_each_lines_words():
    boxes = [[10, 20, 30, 40], [35, 18, 60, 42], [5, 100, 50, 120], [70, 22, 90, 39]]
    lines = [0, 0, 1, 0]
    union = [10, 18, 90, 42]
    assert line_boxes(boxes, lines) == [union, union, [5, 100, 50, 120], union]


def test_bio_decoding_never_puts_an_inside_tag_after_o_or_another_label():
    # argmax would give I-DATE after O, and I-AMOUNT after B-DATE, and I- first.
    argmax_tags = ["I-DATE", "O", "I-DATE", "B-DATE", "I-AMOUNT", "I-AMOUNT", "O"]
    scores = scores_for(argmax_tags)
    assert not bio_valid([LABELS[i] for i in scores.argmax(1)])
    tags = decode_words(list(scores), ID2LABEL)
    assert bio_valid(tags), tags
    # A valid argmax sequence is kept as it is.
    good = ["B-MERCHANT_NAME", "I-MERCHANT_NAME", "O", "B-AMOUNT", "I-AMOUNT"]
    assert decode_words(list(scores_for(good)), ID2LABEL) == good


def test_bio_decoding_on_random_scores_is_valid_and_optimal():
    rng = np.random.default_rng(0)
    start, follows = allowed_transitions(LABELS)
    for _ in range(50):
        scores = np.log(rng.dirichlet(np.ones(len(LABELS)), size=6))
        path = viterbi(scores, start, follows)
        assert bio_valid([LABELS[i] for i in path])
        # No valid sequence scores higher (exhaustive over a short prefix would be slow; check greedy fixes).
        best = sum(scores[k, j] for k, j in enumerate(path))
        greedy = [LABELS[i] for i in scores.argmax(1)]
        if bio_valid(greedy):
            assert best == pytest.approx(scores.max(1).sum())


def test_merge_predictions_bio_reads_the_chosen_window():
    windows = [Window(sequence=0, words=[(0, 1), (1, 2), (2, 3)])]
    scores = scores_for(["O", "O", "I-DATE", "I-DATE", "O"])[None]  # example 0, tokens 0..4
    assert merge_predictions(scores.argmax(-1), windows, [3], ID2LABEL) == [["O", "I-DATE", "I-DATE"]]
    assert bio_valid(merge_predictions(scores, windows, [3], ID2LABEL, decode="bio")[0])


def test_tagger_applies_the_recorded_decode_and_box_level(tmp_path):
    receipt = load_receipts("demo:3")[0][2]
    argmax = ReceiptTagger.from_pretrained(make_model_dir(tmp_path / "a"))
    bio = ReceiptTagger.from_pretrained(make_model_dir(tmp_path / "b", decode="bio"))
    line = ReceiptTagger.from_pretrained(make_model_dir(tmp_path / "c", box_level="line"))
    assert (argmax.decode, bio.decode, line.box_level) == ("argmax", "bio", "line")
    a, b = argmax.predict(receipt), bio.predict(receipt)
    assert not bio_valid(a.tags)  # a random model breaks BIO under argmax ...
    assert bio_valid(b.tags)  # ... and never under bio decoding
    assert all(0 < w.confidence <= 1 for w in b.words)
    assert line.predict(receipt).tags != a.tags  # the same weights read other boxes


def test_train_records_box_level_and_decode_in_run_json_and_best(env):
    out = env / "run"
    result = run_cli(
        "train", "--job-name", "opts", "--dataset", "demo:30", "--pretrained", "tiny", "--epochs", "1",
        "--max-seq-length", "64", "--output-dir", out, "--box-level", "line", "--decode", "bio",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((out / "run.json").read_text())["config"]
    assert (config["box_level"], config["decode"]) == ("line", "bio")
    label_map = json.loads((out / "best" / "label_map.json").read_text())
    assert (label_map["box_level"], label_map["decode"]) == ("line", "bio")
    tagger = ReceiptTagger.from_pretrained(out / "best")
    assert (tagger.box_level, tagger.decode) == ("line", "bio")
