"""Row shapes users have, normalized into items to score.

Accepted shapes (TRL's preference formats and RewardBench's):

* pairs, standard: ``prompt`` (str), ``chosen`` (str), ``rejected`` (str);
* pairs, conversational: ``prompt`` (list of messages), ``chosen`` / ``rejected`` (lists holding
  the assistant message), or ``chosen`` / ``rejected`` as whole conversations with an implicit
  prompt (their common leading messages);
* candidates: ``prompt`` (str or messages) or ``messages``, and ``responses`` (list of str or of
  assistant messages);
* K-wise preferences (RewardBench 2, RM-Bench): ``prompt`` (str or messages) or ``messages``,
  ``chosen`` and ``rejected`` as non-empty lists of strings (the correct and the incorrect
  completions); optional ``num_correct`` and ``total_completions`` must agree with the lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefsmith.data.messages import Message, common_prefix_length

ROLES = ("system", "user", "assistant", "tool")

# The columns of each shape, as a step's ``required_columns`` (alternatives: any one suffices).
#: Prompt-only rows (generation).
PROMPT_COLUMNS = (("prompt",), ("messages",))
#: Pairs: ``chosen``/``rejected`` with ``prompt`` or ``messages``, or as whole conversations
#: that carry their prompt.
PAIR_COLUMNS = (("chosen", "rejected"),)
#: Candidates: ``responses`` with ``prompt`` or ``messages``.
CANDIDATE_COLUMNS = (("prompt", "responses"), ("messages", "responses"))
#: Anything :func:`to_scoring_item` accepts.
SCORING_COLUMNS = PAIR_COLUMNS + CANDIDATE_COLUMNS


class RowError(ValueError):
    """A row that cannot be used, with where it is and what is wrong."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.reason = message


@dataclass(frozen=True)
class ScoringItem:
    """One prompt and the responses to score for it.

    Attributes:
        context: Conversation before the responses (ends with a user turn).
        names: Name of each response (``chosen``/``rejected``, ``0``, ``1``, ... or, K-wise,
            ``chosen[0]``, ..., ``rejected[0]``, ...: the correct completions first).
        responses: Response strings, aligned with ``names``.
        kind: ``pair``, ``candidates`` or ``kwise``.
    """

    context: tuple[Message, ...]
    names: tuple[str, ...]
    responses: tuple[str, ...]
    kind: str


def _messages(value: Any, field: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"field {field!r} must be a non-empty list of messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"field {field!r}[{i}] must be a {{'role', 'content'}} message")
        if message["role"] not in ROLES or not isinstance(message["content"], str):
            raise ValueError(f"field {field!r}[{i}] has an unknown role or non-string content")
        out.append({"role": message["role"], "content": message["content"]})
    return out


def extract_prompt(chosen: Sequence[Message], rejected: Sequence[Message]) -> int:
    """Number of leading messages that two conversations share (TRL's implicit prompt).

    >>> u = {"role": "user", "content": "hi"}
    >>> extract_prompt([u, {"role": "assistant", "content": "a"}],
    ...                [u, {"role": "assistant", "content": "b"}])
    1
    """
    return common_prefix_length(chosen, rejected)


def _prompt(row: Mapping[str, Any]) -> list[Message]:
    value = row.get("prompt", row.get("messages"))
    if value is None:
        raise ValueError("missing field 'prompt' (or 'messages')")
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("field 'prompt' is empty")
        return [{"role": "user", "content": value}]
    return _messages(value, "prompt" if "prompt" in row else "messages")


def _response(value: Any, field: str) -> str:
    if isinstance(value, list):
        messages = _messages(value, field)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise ValueError(f"field {field!r} must hold exactly one assistant message")
        value = messages[0]["content"]
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field {field!r} is empty")
    return value


def _with_system(context: list[Message], system_prompt: str | None) -> tuple[Message, ...]:
    if system_prompt and not (context and context[0]["role"] == "system"):
        context = [{"role": "system", "content": system_prompt}, *context]
    if context[-1]["role"] != "user":
        raise ValueError("the prompt must end with a user turn")
    return tuple(context)


def is_kwise_row(row: Mapping[str, Any]) -> bool:
    """Whether a row is K-wise: ``chosen`` and ``rejected`` are lists of strings (not messages).

    >>> is_kwise_row({"prompt": "q", "chosen": ["a"], "rejected": ["b", "c"]})
    True
    >>> is_kwise_row({"prompt": "q", "chosen": "a", "rejected": "b"})
    False
    """
    values = [row.get("chosen"), row.get("rejected")]
    return all(isinstance(v, list) for v in values) and any(
        isinstance(x, str) for v in values for x in v
    )


def kwise_split(names: Sequence[str]) -> int:
    """How many of a K-wise item's responses are correct (its ``chosen[i]`` names come first).

    >>> kwise_split(("chosen[0]", "chosen[1]", "rejected[0]"))
    2
    """
    return sum(1 for n in names if n.startswith("chosen["))


def _completions(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"field {field!r} must be a non-empty list of strings (K-wise row)")
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise ValueError(f"field {field!r}[{i}] must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"field {field!r}[{i}] is empty")
    return tuple(value)


def _count(row: Mapping[str, Any], field: str, expected: int, what: str) -> None:
    value = row.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value != expected:
        raise ValueError(f"field {field!r} is {value!r} but the row has {expected} {what}")


def to_kwise_item(row: Mapping[str, Any], system_prompt: str | None = None) -> ScoringItem:
    """A K-wise row: correct completions (``chosen``) then incorrect ones (``rejected``).

    >>> item = to_kwise_item({"prompt": "2+2?", "chosen": ["4"], "rejected": ["5", "22"],
    ...                       "num_correct": 1})
    >>> item.kind, item.names, item.responses
    ('kwise', ('chosen[0]', 'rejected[0]', 'rejected[1]'), ('4', '5', '22'))
    >>> to_kwise_item({"prompt": "q", "chosen": ["a"], "rejected": ["b"], "num_correct": 2})
    Traceback (most recent call last):
    ...
    ValueError: field 'num_correct' is 2 but the row has 1 chosen completions
    """
    chosen = _completions(row.get("chosen"), "chosen")
    rejected = _completions(row.get("rejected"), "rejected")
    _count(row, "num_correct", len(chosen), "chosen completions")
    _count(row, "num_rejected", len(rejected), "rejected completions")
    _count(row, "total_completions", len(chosen) + len(rejected), "completions")
    names = tuple(f"chosen[{i}]" for i in range(len(chosen)))
    names += tuple(f"rejected[{i}]" for i in range(len(rejected)))
    context = _with_system(_prompt(row), system_prompt)
    return ScoringItem(context, names, chosen + rejected, "kwise")


def to_scoring_item(row: Any, system_prompt: str | None = None) -> ScoringItem:
    """Normalize one input row; raises ``ValueError`` saying what is wrong.

    ``system_prompt`` is prepended unless the row brings its own system turn.

    >>> item = to_scoring_item({"prompt": "2+2?", "chosen": "4", "rejected": "5"})
    >>> item.names, item.responses, item.context
    (('chosen', 'rejected'), ('4', '5'), ({'role': 'user', 'content': '2+2?'},))
    >>> to_scoring_item({"prompt": "hi", "responses": ["a", "b", "c"]}).names
    ('0', '1', '2')
    >>> to_scoring_item({"prompt": "hi", "chosen": ["a", "b"], "rejected": ["c"]}).kind
    'kwise'
    >>> to_scoring_item({"prompt": "hi", "chosen": "", "rejected": "b"})
    Traceback (most recent call last):
    ...
    ValueError: field 'chosen' is empty
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    if is_kwise_row(row) and ("prompt" in row or "messages" in row):
        return to_kwise_item(row, system_prompt)
    if "responses" in row:
        responses = row["responses"]
        if not isinstance(responses, list) or not responses:
            raise ValueError("field 'responses' must be a non-empty list")
        texts = tuple(_response(r, f"responses[{i}]") for i, r in enumerate(responses))
        names = tuple(str(i) for i in range(len(texts)))
        context = _with_system(_prompt(row), system_prompt)
        return ScoringItem(context, names, texts, "candidates")
    for field in ("chosen", "rejected"):
        if field not in row:
            raise ValueError(f"missing field {field!r} (or 'responses')")
    chosen, rejected = row["chosen"], row["rejected"]
    if "prompt" not in row and "messages" not in row and isinstance(chosen, list):
        chosen_msgs, rejected_msgs = _messages(chosen, "chosen"), _messages(rejected, "rejected")
        n = extract_prompt(chosen_msgs, rejected_msgs)
        if n == 0:
            raise ValueError("'chosen' and 'rejected' share no prompt messages")
        prompt = chosen_msgs[:n]
        chosen, rejected = chosen_msgs[n:], rejected_msgs[n:]
    else:
        prompt = _prompt(row)
    texts = (_response(chosen, "chosen"), _response(rejected, "rejected"))
    return ScoringItem(_with_system(prompt, system_prompt), ("chosen", "rejected"), texts, "pair")


def to_prompt(row: Any, system_prompt: str | None = None) -> tuple[Message, ...]:
    """Normalize the prompt of a row with ``prompt`` (str or messages) or ``messages``.

    Used for prompt-only input (generation); raises ``ValueError`` saying what is wrong.

    >>> to_prompt({"prompt": "hi"}, "Be brief.")
    ({'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'hi'})
    >>> to_prompt({"text": "hi"})
    Traceback (most recent call last):
    ...
    ValueError: missing field 'prompt' (or 'messages')
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    return _with_system(_prompt(row), system_prompt)
