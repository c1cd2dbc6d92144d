"""Word tags from token scores: argmax, or BIO-constrained Viterbi (`--decode bio`).

Argmax picks each word's label alone, so it can output I-DATE after O or after B-TIME: a span
that no training tag has. BIO decoding picks the best-scoring tag sequence of each receipt (or
line) among those where every I-X follows B-X or I-X, summing the log-probabilities of the words'
first sub-tokens (read from the window chosen by features.chosen_windows).
"""

from __future__ import annotations

import numpy as np

DECODES = ("argmax", "bio")


def allowed_transitions(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(start[j], follows[i, j]): may a sequence start with labels[j]; may labels[j] follow labels[i]."""
    n = len(labels)
    start = np.array([not t.startswith("I-") for t in labels])
    follows = np.ones((n, n), dtype=bool)
    for j, t in enumerate(labels):
        if t.startswith("I-"):
            follows[:, j] = [p in (f"B-{t[2:]}", t) for p in labels]
    return start, follows


def viterbi(scores: np.ndarray, start: np.ndarray, follows: np.ndarray) -> list[int]:
    """Best label ids for one sequence of words; scores: [words, labels] log-probabilities."""
    if len(scores) == 0:
        return []
    blocked = -1e9  # finite, so a row of all-blocked labels still decodes (to the best allowed one)
    total = np.where(start, scores[0], blocked)
    back = []
    step = np.where(follows, 0.0, blocked)
    for row in scores[1:]:
        cand = total[:, None] + step  # [previous, current]
        best_prev = cand.argmax(0)
        total = cand[best_prev, np.arange(len(row))] + row
        back.append(best_prev)
    path = [int(total.argmax())]
    for best_prev in reversed(back):
        path.append(int(best_prev[path[-1]]))
    return path[::-1]


def decode_words(word_scores: list[np.ndarray | None], id2label: dict) -> list[str]:
    """BIO-constrained tags of one sequence; a word read from no window (None) is O."""
    labels = [id2label[i] for i in range(len(id2label))]
    o_row = np.where(np.array(labels) == "O", 0.0, -1e9)
    scores = np.stack([o_row if s is None else np.asarray(s, dtype=np.float64) for s in word_scores])
    if not len(scores):
        return []
    return [labels[i] for i in viterbi(scores, *allowed_transitions(labels))]
