"""Render conversations with chat templates and find the prompt/response boundary on token ids.

The conditioning context (system prompt, user turns, ...) and the response are rendered with
the tokenizer's chat template twice: once as the prompt with ``add_generation_prompt=True``,
once as the whole conversation including the assistant response. Both are tokenized without
extra special tokens; the response tokens are those after the longest common prefix of the two
id sequences. When the template leaves the prompt ids an exact prefix (the usual case), that is
exactly the response as the template renders it, end-of-turn token included. When a template
re-tokenizes the boundary (a token merges the last prompt characters with the first response
characters), the merged token counts as a response token and the row is flagged
``boundary_merged``; the prompt is never cut out of the text by string replacement.

BOS appears exactly once: if the tokenizer adds a BOS token by default and the rendered text
does not already start with it, it is prepended.

Same text (``renderer``): a model may score another model's rendering instead of its own. The
other tokenizer's chat template renders the prompt and the whole conversation as strings
(its special-token markers, ``<|im_start|>`` say, are then plain text), and this tokenizer
tokenizes those strings; the boundary is found on this tokenizer's ids exactly as above. Two
models with different tokenizers then score the same characters after the same characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefsmith.data.messages import Message, common_prefix_length

#: Template for models that ship none (base models). Documented in the README.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}"
    "{{ eos_token }}\n\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class EncodedResponse:
    """Token ids of a rendered conversation and where its response starts.

    Attributes:
        input_ids: Ids of the whole rendered conversation (prompt and response).
        response_start: Index of the first response token in ``input_ids``.
        boundary_merged: True when the template re-tokenized the prompt/response boundary.
        truncated: ``None``, ``"prompt"`` (prompt trimmed from the left) or ``"response"``
            (the response alone did not fit and was cut on the right).
    """

    input_ids: tuple[int, ...]
    response_start: int
    boundary_merged: bool = False
    truncated: str | None = None

    @property
    def n_response_tokens(self) -> int:
        """Number of scored (response) tokens."""
        return len(self.input_ids) - self.response_start


def truncate_encoded(
    ids: Sequence[int], response_start: int, max_length: int, keep_first: int = 0
) -> tuple[tuple[int, ...], int, str | None]:
    """Fit ``ids`` into ``max_length`` tokens: keep the response, trim the prompt from the left.

    ``keep_first`` leading tokens (a BOS) are always kept. When even the response does not fit,
    it is cut on the right and the row is flagged ``"response"``.

    >>> truncate_encoded([1, 2, 3, 4, 5, 6], 3, 10)
    ((1, 2, 3, 4, 5, 6), 3, None)
    >>> truncate_encoded([1, 2, 3, 4, 5, 6], 3, 5, keep_first=1)
    ((1, 3, 4, 5, 6), 2, 'prompt')
    >>> truncate_encoded([1, 2, 3, 4, 5, 6], 3, 3, keep_first=1)
    ((1, 3, 4), 2, 'response')
    """
    if len(ids) <= max_length:
        return tuple(ids), response_start, None
    head = list(ids[:keep_first])
    prompt = list(ids[keep_first:response_start])
    response = list(ids[response_start:])
    room_for_prompt = max_length - len(head) - len(response)
    if room_for_prompt >= 1:
        kept = prompt[len(prompt) - room_for_prompt :]
        return tuple(head + kept + response), len(head) + len(kept), "prompt"
    # Keep one conditioning token so the first response token has a prediction.
    kept = prompt[-1:] if prompt else []
    start = len(head) + len(kept)
    return tuple((head + kept + response)[:max_length]), start, "response"


def ensure_chat_template(tokenizer: Any) -> str:
    """Give a tokenizer without a chat template the plain template; return the template used."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    return tokenizer.chat_template


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer prepends a BOS token when asked for special tokens."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


@dataclass
class ConversationEncoder:
    """Encodes (context messages, response) pairs for one tokenizer.

    Attributes:
        tokenizer: A ``transformers`` tokenizer; given the plain template if it has none.
        max_length: Maximum sequence length; longer rows follow :func:`truncate_encoded`.
        renderer: Another tokenizer whose chat template renders the text that ``tokenizer``
            tokenizes (same text; ``None``: ``tokenizer``'s own template).

    >>> from prefsmith.testing import tiny_tokenizer
    >>> strong, weak = tiny_tokenizer("chatml"), tiny_tokenizer("plain")
    >>> same_text = ConversationEncoder(weak, 512, renderer=strong)
    >>> chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    >>> e = same_text.encode(chat, "Hello!")
    >>> prompt = weak.decode(list(e.input_ids[1 : e.response_start]))  # after the weak BOS
    >>> prompt == strong.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    True
    >>> print(prompt + "|")
    <|im_start|>system
    Be brief.<|im_end|>
    <|im_start|>user
    Hi<|im_end|>
    <|im_start|>assistant
    |
    >>> weak.decode(list(e.input_ids[e.response_start :]))
    'Hello!<|im_end|>\\n'
    """

    tokenizer: Any
    max_length: int
    renderer: Any = None

    def __post_init__(self) -> None:
        self.template = ensure_chat_template(self.tokenizer)
        if self.renderer is not None:
            self.template = ensure_chat_template(self.renderer)
        self.bos_id = self.tokenizer.bos_token_id if adds_bos(self.tokenizer) else None

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id, *ids]
        return ids

    def render(self, messages: Sequence[Message], response: str | None) -> str:
        """Render the prompt (``response=None``) or the whole conversation as text (with the
        ``renderer``'s template when there is one)."""
        renderer = self.renderer if self.renderer is not None else self.tokenizer
        if response is None:
            return renderer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        conversation = [*messages, {"role": "assistant", "content": response}]
        return renderer.apply_chat_template(conversation, tokenize=False)

    def encode(self, messages: Sequence[Message], response: str) -> EncodedResponse:
        """Token ids of ``messages`` + ``response`` and the index of the first response token."""
        prompt_ids = self._ids(self.render(messages, None))
        full_ids = self._ids(self.render(messages, response))
        start = common_prefix_length(prompt_ids, full_ids)
        merged = start < len(prompt_ids)
        if start >= len(full_ids):
            raise ValueError("the rendered response has no tokens")
        if start == 0:
            raise ValueError("the rendered prompt has no tokens to condition on")
        keep_first = 1 if self.bos_id is not None else 0
        ids, start, truncated = truncate_encoded(full_ids, start, self.max_length, keep_first)
        return EncodedResponse(ids, start, merged, truncated)


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text each token adds, so that ``"".join(pieces)`` is the decoded ids.

    A character split over several byte-level tokens appears with the token that completes it
    (the earlier ones add ``""``), so no piece holds a broken character.
    """
    pieces, previous = [], ""
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(list(ids[:end]), skip_special_tokens=False)
        if text.endswith("\ufffd") and end < len(ids):  # an incomplete UTF-8 sequence so far
            pieces.append("")
            continue
        pieces.append(text[len(previous) :] if text.startswith(previous) else text)
        previous = text
    return pieces
