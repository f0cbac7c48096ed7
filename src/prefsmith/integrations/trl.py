"""A prefsmith scorer as a TRL reward function (``reward_funcs`` of ``GRPOTrainer``, online DPO).

TRL calls a reward function as ``f(prompts=..., completions=..., **kwargs) -> list[float]``,
one reward per completion, and logs the rewards under ``f.__name__``. :func:`reward_function`
turns any scorer spec (:mod:`prefsmith.rewards.spec`) into such a callable, whose ``__name__``
is the scorer's full name (``density-ratio:STRONG,WEAK:sum``).

Both of TRL's formats are read the way ``prefsmith score`` reads rows:

* standard: ``prompts`` are strings and ``completions`` strings; the prompt is the user turn
  and the completion the assistant response, rendered with each scoring model's own chat
  template (a row ``{"prompt": p, "responses": [c, ...]}``);
* conversational: ``prompts`` are lists of messages ending with a user turn and each completion
  a list holding one assistant message (a row ``{"prompt": [...], "responses": [[...], ...]}``).

Consecutive completions of one prompt (GRPO's group of ``num_generations``) become one
candidates row, so their shared context is encoded once; the rewards do not depend on that
grouping (the scorers are batch-invariant), so a completion gets exactly the reward that
``prefsmith score`` gives it. Models load once, on the first call, from the
:class:`~prefsmith.models.pool.ModelPool` given (share one pool, with a
:class:`~prefsmith.models.cache.LogProbCache`, between several reward functions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefsmith.data.rows import to_scoring_item
from prefsmith.defaults import DEFAULT_STRONG, DEFAULT_WEAK
from prefsmith.models.pool import ModelPool
from prefsmith.rewards.base import Reward
from prefsmith.rewards.spec import ScorerSpec


def _text_of(completion: Any) -> str:
    """The text of a completion, standard (a string) or conversational (assistant messages).

    >>> _text_of("4"), _text_of([{"role": "assistant", "content": "4"}])
    ('4', '4')
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    raise TypeError(f"a completion must be a string or a list of messages, not {completion!r}")


def group_rows(prompts: Sequence[Any], completions: Sequence[Any]) -> list[tuple[Any, list[int]]]:
    """Runs of consecutive equal prompts: ``(prompt, indices of their completions)``.

    >>> group_rows(["a", "a", "b", "a"], ["1", "2", "3", "4"])
    [('a', [0, 1]), ('b', [2]), ('a', [3])]
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    groups: list[tuple[Any, list[int]]] = []
    for i, prompt in enumerate(prompts):
        if groups and groups[-1][0] == prompt:
            groups[-1][1].append(i)
        else:
            groups.append((prompt, [i]))
    return groups


class RewardFunction:
    """A reward as a TRL reward function: ``f(prompts, completions, **kwargs) -> list[float]``.

    Build it with :func:`reward_function`.

    Attributes:
        reward: The prefsmith reward that scores the completions.
        system_prompt: System turn for prompts without one (as ``prefsmith score
            --system-prompt``).
        empty_reward: The reward of an empty (or whitespace-only) completion, which
            ``prefsmith score`` refuses to score: ``None`` (the default) returns ``None``,
            which TRL counts as "no reward" (NaN).
        __name__: The scorer's full name, under which TRL logs the rewards.
    """

    def __init__(
        self, reward: Reward, system_prompt: str | None = None, empty_reward: float | None = None
    ) -> None:
        self.reward = reward
        self.system_prompt = system_prompt
        self.empty_reward = empty_reward
        self.__name__ = reward.name

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """One reward per completion, in order (``kwargs``, TRL's extra columns, are unused)."""
        out: list[float | None] = [self.empty_reward] * len(completions)
        items, slots = [], []
        for prompt, indices in group_rows(prompts, completions):
            kept = [i for i in indices if _text_of(completions[i]).strip()]
            if not kept:
                continue
            row = {"prompt": prompt, "responses": [completions[i] for i in kept]}
            items.append(to_scoring_item(row, self.system_prompt))
            slots.append(kept)
        if items:
            for kept, scored in zip(slots, self.reward.score_items(items), strict=True):
                for i, response in zip(kept, scored.responses, strict=True):
                    out[i] = float(response.reward)
        return out

    def __repr__(self) -> str:
        return f"RewardFunction({self.__name__!r})"


def reward_function(
    scorer: str | Reward = "density-ratio",
    *,
    strong: str = DEFAULT_STRONG,
    weak: str = DEFAULT_WEAK,
    pool: ModelPool | None = None,
    system_prompt: str | None = None,
    empty_reward: float | None = None,
) -> RewardFunction:
    """A TRL reward function from a scorer spec (or a built :class:`Reward`).

    Args:
        scorer: A scorer spec (``density-ratio``, ``logprob:MODEL:mean``, ``dpo:P,R:0.1``,
            ``fitted:FILE``, ...) or a reward.
        strong, weak: Models a spec leaves out (as ``--strong``/``--weak``).
        pool: Where models come from (``None``: a new :class:`ModelPool` with the default
            options and no cache).
        system_prompt: System turn for prompts without one.
        empty_reward: The reward of an empty completion (``None``: TRL's "no reward").

    >>> from prefsmith.testing import tiny_model
    >>> f = reward_function("density-ratio", strong=tiny_model(seed=0), weak=tiny_model(seed=1))
    >>> f.__name__.startswith("density-ratio:") and f.__name__.endswith(":sum")
    True
    >>> rewards = f(prompts=["2+2?", "2+2?"], completions=["4", "five"])
    >>> len(rewards), all(isinstance(r, float) for r in rewards)
    (2, True)
    >>> f(prompts=[[{"role": "user", "content": "2+2?"}]],
    ...   completions=[[{"role": "assistant", "content": "4"}]]) == rewards[:1]
    True
    """
    if isinstance(scorer, str):
        scorer = ScorerSpec.parse(scorer, strong, weak).build(pool)
    return RewardFunction(scorer, system_prompt, empty_reward)
