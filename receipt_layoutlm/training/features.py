"""Tagged receipts -> model examples, and model predictions -> one tag per word.

Receipt mode: a receipt's words are cut into windows of whole words holding at most
`max_seq_length - 2` sub-tokens, consecutive windows overlapping by about `overlap`
sub-tokens. Only a word's first sub-token carries its tag; later sub-tokens, [CLS],
[SEP] and padding get -100. Sub-tokens inherit their word's box; [CLS] gets [0,0,0,0]
and [SEP] [1000,1000,1000,1000]. A word seen in several windows takes the prediction
of the window where it has the most context on both sides.

Line mode: one OCR line per example (the old tool's unit), windowed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from .recipe import TaggedReceipt

IGNORE = -100
CLS_BOX, SEP_BOX = [0, 0, 0, 0], [1000, 1000, 1000, 1000]


@dataclass
class Window:
    """Where an example came from: the sequence it belongs to and, for each word in it,
    (word index in that sequence, position of its first sub-token in the example)."""

    sequence: int
    words: list[tuple[int, int]]


def word_token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Sub-token ids of each word; a word the tokenizer erases becomes [UNK]."""
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [ids or [tokenizer.unk_token_id] for ids in encoded]


def plan_windows(lengths: list[int], max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Split words (given their sub-token counts) into [start, end) windows of whole words.

    Each window holds at most `max_tokens` sub-tokens (a single longer word is truncated
    on its own), the next window starts so that about `overlap` sub-tokens repeat.
    """
    windows, start, n = [], 0, len(lengths)
    while start < n:
        end, used = start, 0
        while end < n and (end == start or used + lengths[end] <= max_tokens):
            used += min(lengths[end], max_tokens)
            end += 1
        windows.append((start, end))
        if end == n:
            break
        # Back up from the end while the repeated part stays within `overlap`.
        next_start, repeated = end, 0
        while next_start - 1 > start and repeated + lengths[next_start - 1] <= overlap:
            next_start -= 1
            repeated += lengths[next_start]
        start = next_start
    return windows


def encode_window(
    tokens: list[list[int]],
    boxes,
    tags,
    unsupervised,
    start: int,
    end: int,
    label2id: dict,
    max_tokens: int,
    cls_id: int,
    sep_id: int,
    sequence: int,
):
    input_ids, bbox, labels, positions = [cls_id], [CLS_BOX], [IGNORE], []
    for w in range(start, end):
        ids = tokens[w][: max(1, max_tokens - (len(input_ids) - 1))]
        positions.append((w, len(input_ids)))
        supervised = tags is not None and w not in unsupervised
        labels.extend([label2id[tags[w]] if supervised else IGNORE] + [IGNORE] * (len(ids) - 1))
        input_ids.extend(ids)
        bbox.extend([boxes[w]] * len(ids))
    input_ids.append(sep_id)
    bbox.append(SEP_BOX)
    labels.append(IGNORE)
    example = {"input_ids": input_ids, "bbox": bbox, "attention_mask": [1] * len(input_ids), "labels": labels}
    return example, Window(sequence=sequence, words=positions)


def sequences(tagged: list[TaggedReceipt], unit: str) -> list[dict]:
    """The units predictions are scored on: whole receipts, or single OCR lines.

    Line mode leaves out lines that O:entity thinning dropped (they are not examples).
    """
    if unit == "receipt":
        return [
            {"receipt": r.id, "texts": r.texts, "boxes": r.boxes, "tags": r.tags, "unsupervised": r.unsupervised}
            for r in tagged
        ]
    out = []
    for r in tagged:
        by_line: dict[int, list[int]] = {}
        for i, line in enumerate(r.lines):
            by_line.setdefault(line, []).append(i)
        for line, idx in by_line.items():
            if all(i in r.unsupervised for i in idx):
                continue
            out.append(
                {
                    "receipt": r.id,
                    "line": line,
                    "texts": [r.texts[i] for i in idx],
                    "boxes": [r.boxes[i] for i in idx],
                    "tags": [r.tags[i] for i in idx],
                    "unsupervised": set(),
                }
            )
    return out


def build_examples(
    seqs: list[dict], tokenizer, label2id: dict, max_seq_length: int = 512, overlap: int = 128
) -> tuple[list[dict], list[Window]]:
    """Encode every sequence into windowed examples (lists of ints, unpadded)."""
    max_tokens = max_seq_length - 2
    examples, windows = [], []
    all_texts = [t for s in seqs for t in s["texts"]]
    all_tokens = word_token_ids(tokenizer, all_texts)  # one batched call: fast tokenizers parallelise it
    offset = 0
    for k, s in enumerate(seqs):
        tokens = all_tokens[offset : offset + len(s["texts"])]
        offset += len(s["texts"])
        lengths = [min(len(t), max_tokens) for t in tokens]
        for start, end in plan_windows(lengths, max_tokens, overlap):
            ex, win = encode_window(
                tokens,
                s["boxes"],
                s.get("tags"),
                s.get("unsupervised", set()),
                start,
                end,
                label2id,
                max_tokens,
                tokenizer.cls_token_id,
                tokenizer.sep_token_id,
                k,
            )
            examples.append(ex)
            windows.append(win)
    return examples, windows


def chosen_windows(windows: list[Window], n_words: list[int]) -> list[list[tuple[int, int] | None]]:
    """For each word of each sequence, (example index, token position) of the window it is read from.

    A word present in several windows is read from the one where min(distance to the
    window's first word, distance to its last word) is largest: the most context. Between
    windows with equal context, the one starting earlier in the sequence: the choice must not
    depend on the order of `windows` (training sorts validation examples by length, the tagger
    does not, and both must read each word from the same window).
    """
    best: list[list[tuple[int, int, int, int] | None]] = [[None] * n for n in n_words]
    for example, win in enumerate(windows):
        last, start = len(win.words) - 1, win.words[0][0] if win.words else 0
        for k, (w, pos) in enumerate(win.words):
            rank = (min(k, last - k), -start)
            current = best[win.sequence][w]
            if current is None or rank > current[:2]:
                best[win.sequence][w] = (*rank, example, pos)
    return [[(c[2], c[3]) if c is not None else None for c in seq] for seq in best]


def merge_predictions(
    pred_ids, windows: list[Window], n_words: list[int], id2label: dict, decode: str = "argmax"
) -> list[list[str]]:
    """Per-example predicted ids (rows indexable by token position) -> one tag per word (see chosen_windows).

    decode="bio": pred_ids holds per-token log-probabilities instead, decoded per sequence with the
    BIO constraint (decoding.py)."""
    if decode == "bio":
        from .decoding import decode_words

        return [
            decode_words([pred_ids[c[0]][c[1]] if c is not None else None for c in seq], id2label)
            for seq in chosen_windows(windows, n_words)
        ]
    return [
        [id2label.get(int(pred_ids[c[0]][c[1]]), "O") if c is not None else "O" for c in seq]
        for seq in chosen_windows(windows, n_words)
    ]
