"""Synthetic scored rows for tests and for measuring the page at scale (no model needed)."""

from __future__ import annotations

import random
from typing import Any

_TEXT = (
    "the sky is blue because sunlight scatters off air molecules and shorter wavelengths scatter"
    " more than longer ones so we see blue light from every direction while sunsets look red"
    " when light crosses more atmosphere <b>bold</b> & code: print(x) café naïve 🙂"
)
_WORDS = tuple(_TEXT.split(" "))
_SUBSETS = ("alpacaeval-easy", "mt-bench-hard", "refusals-dangerous", "math-prm", "hep-python")
_SCORED_WITH = {
    "strong": "smollm2-135m-instruct",
    "weak": "gemma3-270m",
    "reduction": "sum",
    "strong_template": "a1b2c3d4e5f6",
    "weak_template": "0f9e8d7c6b5a",
}


def _response(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n_words)]
    for k in range(12, len(words), 25):
        words[k] += "\n"
    return " ".join(words).replace("\n ", "\n")


def _split(text: str, rng: random.Random, sizes: tuple[int, int]) -> list[str]:
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(*sizes)
        pieces.append(text[i : i + n])
        i += n
    return pieces


def _tokens(text: str, rng: random.Random, shared: bool) -> tuple[dict[str, Any], float]:
    """Token detail of one response and its ``sum`` reward (Σ strong − Σ weak)."""
    strong_pieces = [*_split(text, rng, (1, 6)), "<|im_end|>", "\n"]
    weak_pieces = strong_pieces if shared else [*_split(text, rng, (2, 5)), "<eos>", "\n\n"]
    s_lp = [-abs(rng.gauss(0.0, 1.6)) for _ in strong_pieces]
    w_lp = [-abs(rng.gauss(0.0, 1.6)) for _ in weak_pieces]
    detail = {
        "strong_ids": list(range(len(strong_pieces))),
        "strong_tokens": strong_pieces,
        "strong_logprobs": s_lp,
        "weak_ids": list(range(len(weak_pieces))) if shared else [7] * len(weak_pieces),
        "weak_tokens": weak_pieces,
        "weak_logprobs": w_lp,
    }
    return detail, sum(s_lp) - sum(w_lp)


def synthetic_rows(
    n: int, *, words: int = 40, tokens: bool = True, shared: bool = False, seed: int = 0
) -> list[dict[str, Any]]:
    """``n`` score-output pair rows with random text and (optionally) token log-probs.

    ``words``: words per response (about 1.3 strong tokens each). The rewards are the exact
    ``sum`` of the saved log-probs, so token contributions must add up to them.

    >>> rows = synthetic_rows(3, words=5)
    >>> len(rows), sorted(rows[0]["token_logprobs"])
    (3, ['chosen', 'rejected'])
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "id": f"{_SUBSETS[i % len(_SUBSETS)]}/{i}",
            "subset": _SUBSETS[i % len(_SUBSETS)],
            "prompt": f"Question {i}: why is the sky blue? <script>alert({i})</script>",
            "chosen": _response(rng, words),
            "rejected": _response(rng, max(3, words // 2)),
        }
        rewards, details = {}, {}
        for name in ("chosen", "rejected"):
            detail, reward = _tokens(row[name], rng, shared)
            rewards[name], details[name] = reward, detail
        if not tokens:
            rewards = {name: rng.gauss(0, 5) for name in rewards}
        truncated = "prompt" if i % 97 == 5 else None
        row.update(
            reward_chosen=rewards["chosen"],
            reward_rejected=rewards["rejected"],
            reward_margin=rewards["chosen"] - rewards["rejected"],
            scored_with={**_SCORED_WITH, "shared_tokenizer": shared},
            response_tokens={
                name: [len(d["strong_logprobs"]), len(d["weak_logprobs"])]
                for name, d in details.items()
            },
            truncated={"chosen": truncated, "rejected": None},
        )
        if tokens:
            row["token_logprobs"] = details
        rows.append(row)
    return rows
