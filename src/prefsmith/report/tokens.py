"""Per-token contributions of the density ratio, for display.

A row scored with ``--save-token-logprobs`` holds, per response, the strong and weak models'
tokens and log-probs. The sum-reduction reward is ``Σ strong − Σ weak``, so it splits into one
contribution per token:

* **same tokenizer** (same token ids): contribution of token *i* = ``strong[i] − weak[i]``;
* **different tokenizers**: the page colours the strong model's tokens. Each weak token's
  log-prob is spread evenly over its bytes and summed over the bytes of each strong token's
  span, so the weak mass is aggregated over the same characters; where the two renderings
  differ (the end-of-turn markers of two chat templates), the weak tail is spread over the
  strong tail. Either way the contributions sum to the ``sum`` reward exactly (up to float
  rounding), whatever the tokenizers.

Token pieces come either as decoded text (their concatenation is the rendered response) or, in
older files, as raw tokenizer pieces (byte-level BPE ``Ġthe``/``Ċ``, SentencePiece ``▁the`` and
``<0x0A>``); raw pieces are mapped back to bytes, so both display as text.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@cache
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table (byte-level BPE vocabularies)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def piece_style(pieces: Sequence[str]) -> str:
    """How a side's pieces are written: ``text``, ``bytelevel`` (``Ġ``) or ``sentencepiece``.

    Decoded text holds plain spaces; raw pieces never do (they may hold newlines: Gemma).

    >>> piece_style(["Hello", " world"]), piece_style(["Hello", "Ġworld", "Ċ"])
    ('text', 'bytelevel')
    >>> piece_style(["▁Hello", "▁world", "<0x0A>"])
    'sentencepiece'
    """
    if any(" " in p for p in pieces):
        return "text"
    joined = "".join(pieces)
    if "Ġ" in joined or "Ċ" in joined or "ĉ" in joined:
        return "bytelevel"
    if "▁" in joined or any(_BYTE_TOKEN.fullmatch(p) for p in pieces):
        return "sentencepiece"
    return "text"


def piece_bytes(piece: str, style: str) -> bytes:
    """The UTF-8 bytes a token piece stands for.

    >>> piece_bytes("Ġthe", "bytelevel"), piece_bytes("Ċ", "bytelevel")
    (b' the', b'\\n')
    >>> piece_bytes("▁the", "sentencepiece"), piece_bytes("<0x0A>", "sentencepiece")
    (b' the', b'\\n')
    >>> piece_bytes("<|im_end|>", "bytelevel")
    b'<|im_end|>'
    """
    if style == "bytelevel":
        table = _unicode_to_byte()
        if all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece)
        return piece.encode("utf-8")
    if style == "sentencepiece":
        match = _BYTE_TOKEN.fullmatch(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        return piece.replace("▁", " ").encode("utf-8")
    return piece.encode("utf-8")


def display_pieces(chunks: Sequence[bytes]) -> list[str]:
    """Text of each token for display: a character split over tokens shows on the last one.

    >>> display_pieces([b"caf", b"\\xc3", b"\\xa9!"])
    ['caf', '', 'é!']
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = [decoder.decode(chunk) for chunk in chunks]
    tail = decoder.decode(b"", final=True)
    if tail and out:
        out[-1] += tail
    return out


@dataclass(frozen=True)
class TokenView:
    """One response's tokens with their contributions to the density ratio.

    Attributes:
        pieces: Display text of each strong-model token.
        strong: Strong log-prob of each token.
        weak: Weak log-prob of each token (same tokenizer) or the weak log-prob mass over the
            token's characters (different tokenizers).
        contributions: ``strong − weak`` per token; they sum to the ``sum`` reward.
        shared: Whether both models had the same tokens.
        decoded_raw: Whether raw tokenizer pieces (``Ġ``, ``▁``) were turned into text.
        note: How the weak side was aligned, for the page (empty when nothing to say).
    """

    pieces: list[str]
    strong: list[float]
    weak: list[float]
    contributions: list[float]
    shared: bool
    decoded_raw: bool = False
    note: str = ""

    @property
    def total(self) -> float:
        """Sum of the contributions: the ``sum``-reduction reward."""
        return float(np.sum(np.asarray(self.contributions, dtype=np.float64)))


def token_view(detail: Mapping[str, Any], shared: bool | None = None) -> TokenView | None:
    """Contributions of one response's tokens from its saved ``token_logprobs`` entry.

    ``shared``: whether strong and weak share a tokenizer (``None``: decide from the ids).
    Returns ``None`` when the entry has no log-probs.

    >>> same = {"strong_ids": [1, 2], "strong_tokens": ["Hi", "!"], "strong_logprobs": [-1.0, -2.0],
    ...         "weak_ids": [1, 2], "weak_tokens": ["Hi", "!"], "weak_logprobs": [-1.5, -1.0]}
    >>> token_view(same).contributions
    [0.5, -1.0]
    >>> cross = {"strong_tokens": ["Hi", " there"], "strong_logprobs": [-1.0, -2.0],
    ...          "weak_tokens": ["H", "i th", "ere"], "weak_logprobs": [-1.0, -4.0, -3.0]}
    >>> view = token_view(cross)
    >>> view.pieces, [round(w, 6) for w in view.weak], round(view.total, 6)
    (['Hi', ' there'], [-2.0, -6.0], 5.0)
    """
    s_lp = detail.get("strong_logprobs")
    w_lp = detail.get("weak_logprobs")
    if s_lp is None or w_lp is None:
        return None
    strong = np.asarray(s_lp, dtype=np.float64)
    weak = np.asarray(w_lp, dtype=np.float64)
    s_ids, w_ids = detail.get("strong_ids"), detail.get("weak_ids")
    s_pieces = detail.get("strong_tokens")
    w_pieces = detail.get("weak_tokens")
    if s_pieces is None or len(s_pieces) != len(strong):
        s_pieces = [f"⟨{t}⟩" for t in (s_ids or range(len(strong)))]
    s_style = piece_style(s_pieces)
    s_chunks = _chunks(s_pieces, s_style)
    # Decoded text pieces are shown as they are; raw pieces are decoded from their bytes.
    pieces = list(s_pieces) if s_style == "text" else display_pieces(s_chunks)
    decoded = s_style != "text"
    if shared is None:
        shared = s_ids is not None and w_ids is not None and list(s_ids) == list(w_ids)
    if shared and len(strong) == len(weak):
        return TokenView(
            pieces, strong.tolist(), weak.tolist(), (strong - weak).tolist(), True, decoded
        )
    if w_pieces is None or len(w_pieces) != len(weak):
        agg = _spread_evenly(float(weak.sum()), len(strong))
        note = "weak tokens unknown: the weak log-prob is spread evenly over the strong tokens"
    else:
        w_style = piece_style(w_pieces)
        decoded = decoded or w_style != "text"
        w_chunks = _chunks(w_pieces, w_style)
        agg, note = _aggregate_weak(s_chunks, w_chunks, weak)
    return TokenView(
        pieces, strong.tolist(), agg.tolist(), (strong - agg).tolist(), False, decoded, note
    )


def _chunks(pieces: Sequence[str], style: str) -> list[bytes]:
    if style == "text":
        return [p.encode("utf-8") for p in pieces]
    return [piece_bytes(p, style) for p in pieces]


def _spread_evenly(total: float, n: int) -> np.ndarray:
    return np.full(n, total / n) if n else np.zeros(0)


def _aggregate_weak(
    s_chunks: Sequence[bytes], w_chunks: Sequence[bytes], weak: np.ndarray
) -> tuple[np.ndarray, str]:
    """Weak log-prob mass over each strong token's bytes (see the module docstring).

    The two renderings are aligned on their longest common run after any leading whitespace
    (a plain template puts a space before the response, a chat template does not); weak bytes
    before it go to the strong head (or the first token), weak bytes after it are spread over
    the strong tail (or the last token).
    """
    n_strong = len(s_chunks)
    s_len = np.array([len(c) for c in s_chunks], dtype=np.int64)
    w_len = np.array([len(c) for c in w_chunks], dtype=np.int64)
    if n_strong == 0:
        return np.zeros(0), ""
    if s_len.sum() == 0 or w_len.sum() == 0:
        note = "no text to align: the weak log-prob is spread evenly over the strong tokens"
        return _spread_evenly(float(weak.sum()), n_strong), note
    # A weak token without bytes (a lone special token) passes its mass to the next one.
    mass = weak.copy()
    if (w_len == 0).any():
        carry = 0.0
        for i in range(len(mass)):
            if w_len[i] == 0:
                carry += mass[i]
                mass[i] = 0.0
            elif carry:
                mass[i] += carry
                carry = 0.0
        if carry:
            mass[int(np.nonzero(w_len)[0][-1])] += carry
    per_byte = np.repeat(np.divide(mass, w_len, where=w_len > 0, out=np.zeros_like(mass)), w_len)
    owner = np.repeat(np.arange(n_strong), s_len)
    s_text, w_text = b"".join(s_chunks), b"".join(w_chunks)
    s0, w0, common = _anchor(s_text, w_text)
    end = s0 + common
    if common and end < len(s_text):
        # End the common run at a strong token boundary ("<" of two end markers is no match).
        token_start = int(np.sum(s_len[: owner[end]]))
        if token_start > s0:
            common = token_start - s0
    agg = np.zeros(n_strong)
    agg += np.bincount(
        owner[s0 : s0 + common], weights=per_byte[w0 : w0 + common], minlength=n_strong
    )
    notes = []
    head, tail = per_byte[:w0], per_byte[w0 + common :]
    for part, strong_span, fallback, where in (
        (head, (0, s0), 0, "before"),
        (tail, (s0 + common, len(s_text)), n_strong - 1, "after"),
    ):
        if not len(part):
            continue
        lo, hi = strong_span
        if hi > lo:
            agg += np.bincount(
                owner[lo:hi], weights=np.full(hi - lo, part.sum() / (hi - lo)), minlength=n_strong
            )
            target = "spread over strong " + repr(_show(s_text[lo:hi]))
        else:
            agg[owner[0] if fallback == 0 else owner[-1]] += part.sum()
            target = "to the " + ("first" if fallback == 0 else "last") + " strong token"
        extra = w_text[:w0] if where == "before" else w_text[w0 + common :]
        notes.append(f"weak {_show(extra)!r} {where} it {target}")
    note = ""
    if notes:
        note = f"{common} bytes aligned; " + "; ".join(notes)
    return agg, note


def _show(data: bytes, limit: int = 24) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "…"


def _anchor(a: bytes, b: bytes) -> tuple[int, int, int]:
    """``(start in a, start in b, length)`` of the longest common prefix run, trying to skip
    the leading whitespace of either side."""
    best = (0, 0, _common_prefix(a, b))
    offsets_a = {0, len(a) - len(a.lstrip())}
    offsets_b = {0, len(b) - len(b.lstrip())}
    for i in sorted(offsets_a):
        for j in sorted(offsets_b):
            n = _common_prefix(a[i:], b[j:])
            if n > best[2]:
                best = (i, j, n)
    return best


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    if not n:
        return 0
    diff = np.frombuffer(a, dtype=np.uint8, count=n) != np.frombuffer(b, dtype=np.uint8, count=n)
    first = int(np.argmax(diff))
    return first if diff[first] else n
