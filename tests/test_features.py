"""Tokens, windows and merging predictions back to words, with the real MiniLM vocabulary."""

import pytest

from receipt_layoutlm.model import load_tokenizer, minilm_dir
from receipt_layoutlm.training.features import (
    IGNORE,
    Window,
    build_examples,
    chosen_windows,
    merge_predictions,
    plan_windows,
    sequences,
)
from receipt_layoutlm.training.recipe import TaggedReceipt


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(minilm_dir())


def test_offline_tokenizer_has_the_full_wordpiece_vocabulary(tokenizer):
    assert len(tokenizer) == 30522
    assert tokenizer.convert_tokens_to_ids("receipt") != tokenizer.unk_token_id


def test_only_first_subtoken_is_supervised_and_boxes_are_inherited(tokenizer):
    r = TaggedReceipt(
        "r",
        ["TRADER", "JOE'S", "0.99"],
        [[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]],
        [0, 0, 1],
        ["B-MERCHANT_NAME", "I-MERCHANT_NAME", "B-AMOUNT"],
    )
    label2id = {"O": 0, "B-MERCHANT_NAME": 1, "I-MERCHANT_NAME": 2, "B-AMOUNT": 3, "I-AMOUNT": 4}
    (ex,), (win,) = build_examples(sequences([r], "receipt"), tokenizer, label2id)
    joe = tokenizer("JOE'S", add_special_tokens=False)["input_ids"]
    assert len(joe) > 1  # the case this test is about
    assert ex["input_ids"][0] == tokenizer.cls_token_id and ex["input_ids"][-1] == tokenizer.sep_token_id
    assert ex["labels"][0] == IGNORE and ex["labels"][-1] == IGNORE
    assert ex["bbox"][0] == [0, 0, 0, 0] and ex["bbox"][-1] == [1000] * 4
    # word 1 starts at position 2 and spans len(joe) tokens; only its first is labelled
    assert win.words[:2] == [(0, 1), (1, 2)]
    assert ex["labels"][2 : 2 + len(joe)] == [2] + [IGNORE] * (len(joe) - 1)
    assert ex["bbox"][2 : 2 + len(joe)] == [[5, 6, 7, 8]] * len(joe)
    assert sum(l != IGNORE for l in ex["labels"]) == 3


def test_unsupervised_words_stay_as_context(tokenizer):
    r = TaggedReceipt("r", ["a", "b", "c"], [[0, 0, 1, 1]] * 3, [0, 1, 2], ["B-DATE", "O", "O"], unsupervised={1})
    (ex,), _ = build_examples(sequences([r], "receipt"), tokenizer, {"O": 0, "B-DATE": 1, "I-DATE": 2})
    assert len(ex["input_ids"]) == 5 and ex["labels"] == [IGNORE, 1, IGNORE, 0, IGNORE]
    # line mode drops a fully thinned line instead
    assert [s["texts"] for s in sequences([r], "line")] == [["a"], ["c"]]


def test_windows_cover_every_word_within_budget_and_overlap():
    lengths = [1, 2, 3, 1, 4, 2, 2, 5, 1, 1, 3, 2] * 5
    windows = plan_windows(lengths, max_tokens=12, overlap=4)
    covered = set()
    for (s, e), nxt in zip(windows, windows[1:] + [None]):
        assert sum(lengths[s:e]) <= 12
        covered.update(range(s, e))
        if nxt:
            assert nxt[0] < e, "consecutive windows overlap"
            assert sum(lengths[nxt[0] : e]) <= 4
            assert nxt[0] > s, "progress"
    assert covered == set(range(len(lengths)))
    assert plan_windows([30, 1], max_tokens=10, overlap=2) == [(0, 1), (1, 2)]


def test_long_receipt_is_windowed_and_predictions_merge_per_word(tokenizer):
    n = 300
    r = TaggedReceipt("r", [f"word{i}" for i in range(n)], [[0, 0, 1, 1]] * n, list(range(n)), ["O"] * n)
    examples, windows = build_examples(sequences([r], "receipt"), tokenizer, {"O": 0}, max_seq_length=64, overlap=16)
    assert len(examples) > 5 and all(len(e["input_ids"]) <= 64 for e in examples)
    # Fake predictions: each window predicts its own index; the merge must pick, per word,
    # the window where the word is farthest from both edges.
    preds = [[k] * 64 for k in range(len(windows))]
    tags = merge_predictions(preds, windows, [n], {k: f"W{k}" for k in range(len(windows))})[0]
    for w in range(n):
        holders = [
            (min(i, len(win.words) - 1 - i), k)
            for k, win in enumerate(windows)
            for i, (ww, _) in enumerate(win.words)
            if ww == w
        ]
        best = max(holders, key=lambda h: h[0])[0]
        assert tags[w] in {f"W{k}" for c, k in holders if c == best}


def test_the_window_a_word_is_read_from_does_not_depend_on_example_order(tokenizer):
    # Training sorts validation examples by length, the tagger keeps them in receipt order: both
    # must read every word from the same window, or the recorded F1 differs from `evaluate`'s.
    receipts = [
        TaggedReceipt(f"r{k}", [f"word{i}" for i in range(n)], [[0, 0, 1, 1]] * n, list(range(n)), ["O"] * n)
        for k, n in enumerate((90, 130, 57))
    ]
    _, windows = build_examples(sequences(receipts, "receipt"), tokenizer, {"O": 0}, max_seq_length=32, overlap=12)
    n_words = [90, 130, 57]
    natural = chosen_windows(windows, n_words)
    for order in (
        list(reversed(range(len(windows)))),
        sorted(range(len(windows)), key=lambda i: -len(windows[i].words)),
    ):
        picked = chosen_windows([windows[i] for i in order], n_words)
        assert [[(order[c[0]], c[1]) for c in seq] for seq in picked] == natural


def test_merge_handles_words_of_several_sequences():
    windows = [Window(0, [(0, 1), (1, 2)]), Window(1, [(0, 1)])]
    assert merge_predictions([[0, 1, 2], [0, 2, 0]], windows, [2, 1], {0: "O", 1: "B-X", 2: "I-X"}) == [
        ["B-X", "I-X"],
        ["I-X"],
    ]
