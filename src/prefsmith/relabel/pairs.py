"""Reward-augmented relabeling (Zhang et al. 2024): two goal-conditioned pairs per scored pair.

For a prompt x with responses y_w, y_l and goal-scale scores g_w, g_l:

* with the system message "aim for score g_w", y_w is preferred to y_l;
* with the system message "aim for score g_l", y_l is preferred to y_w.

The result does not depend on which response the input called ``chosen``: only the scores
decide. At inference the policy is conditioned on the scale's highest goal.

Tie rule (the paper's code emits both pairs, which then share one goal and contradict each
other): when the mapped goals are equal, ``drop`` (default) leaves the input pair out,
``chosen`` keeps only the pair that prefers the input's ``chosen`` response (the original
preference label, under the shared goal), ``both`` keeps both as the paper's code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from prefsmith.data.io import read_text_file
from prefsmith.data.messages import Message
from prefsmith.relabel.scale import GoalScale, format_goal

TieRule = Literal["drop", "chosen", "both"]
TIE_RULES: tuple[str, ...] = ("drop", "chosen", "both")
OutputFormat = Literal["conversational", "standard"]


def default_template_path() -> Path:
    """The goal system-prompt template shipped with prefsmith."""
    return Path(str(files("prefsmith").joinpath("resources/relabel/goal_system_prompt.txt")))


def load_template(path: str | Path | None = None) -> str:
    """Read a goal template; it must contain ``{goal}`` (``{low}``/``{high}`` are optional)."""
    path = Path(path) if path else default_template_path()
    text = read_text_file(path).strip()
    if "{goal}" not in text:
        raise ValueError(f"{path}: a goal template must contain the placeholder {{goal}}")
    try:
        text.format(goal=1, low=1, high=10)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"{path}: only {{goal}}, {{low}} and {{high}} may appear in braces ({err!r})"
        ) from None
    return text


def goal_message(goal: float, template: str, scale: GoalScale | None = None) -> str:
    """The system-message text asking for ``goal``.

    >>> goal_message(10.0, "Aim for {goal} of {high}.")
    'Aim for 10 of 10.'
    >>> goal_message(7.5, "Aim for {goal} ({low}-{high}).", GoalScale(low=0, high=5))
    'Aim for 7.5 (0-5).'
    """
    scale = scale or GoalScale()
    return template.format(
        goal=format_goal(goal), low=format_goal(scale.low), high=format_goal(scale.high)
    )


def goal_system_prompt(
    goal: float,
    template: str | Path | None = None,
    system_prompt: str | None = None,
    scale: GoalScale | None = None,
) -> str:
    """System turn that conditions a relabel-tuned policy on ``goal`` (``prefsmith sample --goal``).

    >>> goal_system_prompt(10, default_template_path()).split(" deserves ")[1][:36]
    'an overall quality score of 10 on a '
    >>> goal_system_prompt(9, None, "Be brief.").endswith("\\n\\nBe brief.")
    True
    """
    text = goal_message(goal, load_template(template), scale)
    return f"{text}\n\n{system_prompt}" if system_prompt else text


def with_goal(context: Sequence[Message], text: str) -> list[Message]:
    """Put the goal text in the system turn: a new first message, or before an existing one.

    >>> with_goal([{"role": "user", "content": "hi"}], "G")
    [{'role': 'system', 'content': 'G'}, {'role': 'user', 'content': 'hi'}]
    >>> with_goal([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}],
    ...           "G")[0]
    {'role': 'system', 'content': 'G\\n\\nBe brief.'}
    """
    messages = [dict(m) for m in context]
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = f"{text}\n\n{messages[0]['content']}"
        return messages
    return [{"role": "system", "content": text}, *messages]


@dataclass(frozen=True)
class RelabeledPair:
    """One goal-conditioned preference pair.

    Attributes:
        prompt: Conversation before the response, goal system message first.
        chosen: The preferred response under this goal.
        rejected: The other response.
        goal: The goal score in the system message.
        swapped: True when ``chosen`` is the input's ``rejected`` response.
    """

    prompt: list[Message]
    chosen: str
    rejected: str
    goal: float
    swapped: bool


def relabel_pair(
    context: Sequence[Message],
    chosen: str,
    rejected: str,
    goal_chosen: float,
    goal_rejected: float,
    template: str,
    scale: GoalScale | None = None,
    tie_rule: TieRule = "drop",
) -> list[RelabeledPair]:
    """The goal-conditioned pairs for one input pair (two, or fewer on a tie).

    >>> ctx = [{"role": "user", "content": "2+2?"}]
    >>> pairs = relabel_pair(ctx, "4", "5", 9.0, 2.0, "Score {goal}.")
    >>> [(p.prompt[0]["content"], p.chosen, p.rejected, p.swapped) for p in pairs]
    [('Score 9.', '4', '5', False), ('Score 2.', '5', '4', True)]
    >>> relabel_pair(ctx, "4", "5", 3.0, 3.0, "Score {goal}.")
    []
    >>> [p.chosen for p in relabel_pair(ctx, "4", "5", 3.0, 3.0, "S {goal}", tie_rule="chosen")]
    ['4']
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie rule must be one of {', '.join(TIE_RULES)}, not {tie_rule!r}")
    tie = goal_chosen == goal_rejected
    if tie and tie_rule == "drop":
        return []

    def pair(goal: float, better: str, worse: str, swapped: bool) -> RelabeledPair:
        message = goal_message(goal, template, scale)
        return RelabeledPair(with_goal(context, message), better, worse, goal, swapped)

    first = pair(goal_chosen, chosen, rejected, False)
    if tie and tie_rule == "chosen":
        return [first]
    second = pair(goal_rejected, rejected, chosen, True)
    return [first, second]


def to_trl_row(pair: RelabeledPair, fmt: OutputFormat = "conversational") -> dict[str, Any]:
    """A TRL preference row: conversational (message lists) or standard (strings).

    The standard format has no roles, so the system text is put before the prompt, separated
    by a blank line (multi-turn prompts are refused there; use the conversational format).

    >>> p = RelabeledPair([{"role": "system", "content": "G"}, {"role": "user", "content": "q"}],
    ...                   "a", "b", 9.0, False)
    >>> to_trl_row(p, "standard")
    {'prompt': 'G\\n\\nq', 'chosen': 'a', 'rejected': 'b'}
    >>> to_trl_row(p)["chosen"]
    [{'role': 'assistant', 'content': 'a'}]
    """
    if fmt == "conversational":
        return {
            "prompt": pair.prompt,
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
    if fmt != "standard":
        raise ValueError(f"format must be conversational or standard, not {fmt!r}")
    roles = [m["role"] for m in pair.prompt]
    if roles.count("user") != 1 or roles[-1] != "user" or "assistant" in roles:
        raise ValueError("the standard format holds single-turn prompts only; use conversational")
    text = "\n\n".join(m["content"] for m in pair.prompt)
    return {"prompt": text, "chosen": pair.chosen, "rejected": pair.rejected}
