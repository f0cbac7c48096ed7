"""The synthetic-preference baselines RMBoost is compared with (``docs/methods.md``).

Each is a :class:`~prefsmith.data.runner.Step` reading prompts (``prompt`` as text or
messages, or ``messages``) and writing one TRL pair per prompt (conversational or standard,
the input's other fields carried), like ``rmboost``; rows without a pair are counted by
reason.

* :class:`RLAIFStep` (``prefsmith rlaif``): two independent samples from the policy; a pairwise
  LLM judge (:class:`PairwiseJudge`) is asked which is better in both orders. The answer is
  read from the judge's log-probs of the two label tokens (``A``/``B``), not from generated
  text. A pair is kept only when both orders prefer the same response; a tie or a
  disagreement (position bias) drops it.
* :class:`RLCDStep` (``prefsmith rlcd``): the same prompt under a positive and a negative
  system prompt (:data:`RLCD_POSITIVE`, :data:`RLCD_NEGATIVE`, or per domain with a domains
  file, :func:`rlcd_system_prompts`); the positive response is chosen, and the pair's prompt
  is the original one, without either system prompt.
* :class:`WestOfNStep` (``prefsmith west-of-n``): N samples, scored by any reward (the density
  ratio by default; any ``eval`` scorer spec), best vs. worst: ``sample`` then ``pairs`` in
  one step.

Pairs whose responses are empty, truncated (unless ``keep_truncated``) or identical are
dropped, as in ``rmboost``.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from prefsmith.data.messages import Message
from prefsmith.data.rows import PROMPT_COLUMNS
from prefsmith.data.step import Advance, Outcome, RowItem, Step
from prefsmith.data.templates import check_placeholders
from prefsmith.defaults import DEFAULT_JUDGE
from prefsmith.generation.pairs import (
    PairFormat,
    PairsOptions,
    PairsStep,
    carried_fields,
    format_pair,
    prepare_candidates,
)
from prefsmith.generation.rmboost import render_prompt
from prefsmith.generation.sampling import (
    Generation,
    SampleStep,
    SamplingConfig,
    check_prompt,
    generate,
    generator_settings,
    prompt_room,
)
from prefsmith.models.backend import LogProbBackend, ScoreRequest
from prefsmith.models.engines import Engine, as_engine
from prefsmith.models.loading import LoadedModel, LoadOptions
from prefsmith.models.pool import ModelPool
from prefsmith.rewards.base import Reward

__all__ = [
    "JUDGE_PROMPT",
    "RLCD_NEGATIVE",
    "RLCD_POSITIVE",
    "PairwiseJudge",
    "RLAIFStep",
    "RLCDConfig",
    "RLCDStep",
    "Verdict",
    "WestOfNStep",
    "rlcd_system_prompts",
]

# --------------------------------------------------------------------------------------------
# RLAIF: a pairwise judge asked in both orders

#: The judge's question (one user turn). ``$prompt`` is the request (a transcript for
#: multi-turn prompts), ``$response_a``/``$response_b`` the two responses, ``$label_a`` and
#: ``$label_b`` the two answer labels.
JUDGE_PROMPT = (
    "Which response answers the request better? Judge helpfulness, correctness, relevance and"
    " harmlessness; ignore length and order.\n\n"
    "Request:\n$prompt\n\n"
    "Response $label_a:\n$response_a\n\n"
    "Response $label_b:\n$response_b\n\n"
    "Answer with one letter, $label_a or $label_b."
)

JUDGE_PLACEHOLDERS = ("prompt", "response_a", "response_b", "label_a", "label_b")


@dataclass(frozen=True)
class Verdict:
    """The judge's reading of one pair, asked in both orders.

    Attributes:
        first_vs_second: log p(label of the first response) - log p(label of the second), with
            the first response shown as ``A``.
        swapped: The same, with the first response shown as ``B``.
    """

    first_vs_second: float
    swapped: float

    @property
    def winner(self) -> str:
        """``first``/``second`` when both orders agree, ``tie`` or ``disagree`` otherwise.

        >>> Verdict(1.0, 0.5).winner, Verdict(-1.0, -0.5).winner
        ('first', 'second')
        >>> Verdict(1.0, -0.5).winner, Verdict(0.0, 2.0).winner
        ('disagree', 'tie')
        """
        if self.first_vs_second == 0 or self.swapped == 0:
            return "tie"
        if self.first_vs_second > 0 and self.swapped > 0:
            return "first"
        if self.first_vs_second < 0 and self.swapped < 0:
            return "second"
        return "disagree"

    @property
    def margin(self) -> float:
        """Mean preference for the first response over the two orders."""
        return (self.first_vs_second + self.swapped) / 2


class PairwiseJudge:
    """An LLM judge that compares two responses by its log-probs of two label tokens.

    For each order the judge sees :data:`JUDGE_PROMPT` (or ``template``) as a user turn and
    its chat template's assistant prefix; the answer is log p(first token of ``label_a``) vs.
    log p(first token of ``label_b``) as the first token of its reply. Nothing is generated
    or parsed.

    Args:
        model: The judge: a model name (through ``pool``) or a scoring backend.
        template: The question, with ``$prompt``, ``$response_a``, ``$response_b``,
            ``$label_a`` and ``$label_b``.
        labels: The two answer labels (their first tokens must differ).
        system_prompt: System turn for the judge, if any.
        pool: Where ``model`` is loaded (shares weights and the log-prob cache).

    >>> from prefsmith.testing import tiny_backend
    >>> judge = PairwiseJudge(tiny_backend(seed=0))
    >>> v = judge.compare([[{"role": "user", "content": "2+2?"}]], ["4"], ["5"])[0]
    >>> v.winner in ("first", "second", "tie", "disagree")
    True
    """

    def __init__(
        self,
        model: str | LogProbBackend = DEFAULT_JUDGE,
        template: str = JUDGE_PROMPT,
        labels: tuple[str, str] = ("A", "B"),
        system_prompt: str | None = None,
        pool: ModelPool | None = None,
    ) -> None:
        check_placeholders(template, JUDGE_PLACEHOLDERS[:3], JUDGE_PLACEHOLDERS, "judge prompt")
        if len(labels) != 2 or labels[0] == labels[1] or not all(labels):
            raise ValueError(f"the judge needs two different labels, got {labels!r}")
        self.backend = model if not isinstance(model, str) else (pool or ModelPool()).backend(model)
        self.template, self.labels, self.system_prompt = template, tuple(labels), system_prompt

    def question(self, context: Sequence[Message], a: str, b: str) -> tuple[Message, ...]:
        """The judge's conversation for responses ``a`` (shown first) and ``b``."""
        text = string.Template(self.template).substitute(
            prompt=render_prompt(context),
            response_a=a,
            response_b=b,
            label_a=self.labels[0],
            label_b=self.labels[1],
        )
        turns: list[Message] = [{"role": "user", "content": text}]
        if self.system_prompt:
            turns.insert(0, {"role": "system", "content": self.system_prompt})
        return tuple(turns)

    def compare(
        self,
        contexts: Sequence[Sequence[Message]],
        firsts: Sequence[str],
        seconds: Sequence[str],
    ) -> list[Verdict]:
        """A :class:`Verdict` per pair (four label log-probs each: two labels, two orders)."""
        requests = []
        for context, first, second in zip(contexts, firsts, seconds, strict=True):
            for a, b in ((first, second), (second, first)):
                question = self.question(context, a, b)
                requests += [ScoreRequest(question, label) for label in self.labels]
        scored = self.backend.score(requests)
        if scored and scored[0].token_ids[:1] == scored[1].token_ids[:1]:
            raise ValueError(
                f"the judge labels {self.labels!r} start with the same token; choose others"
            )
        first_tokens = [float(s.logprobs[0]) for s in scored]
        verdicts = []
        for k in range(len(firsts)):
            a_ab, b_ab, a_ba, b_ba = first_tokens[4 * k : 4 * k + 4]
            # order 1 shows the first response as A; order 2 shows it as B
            verdicts.append(Verdict(a_ab - b_ab, b_ba - a_ba))
        return verdicts

    def settings(self) -> dict[str, Any]:
        """The judge's model, template (by hash) and labels."""
        return {
            "judge": self.backend.name,
            "fingerprint": self.backend.fingerprint,
            "prompt_hash": _hash(self.template),
            "labels": list(self.labels),
            "system_prompt": self.system_prompt,
        }


def pair_problem(
    a: Generation, b: Generation, keep_truncated: bool, names: tuple[str, str]
) -> str | None:
    """Why two responses make no pair (empty, truncated, identical), or ``None``.

    >>> ok = Generation("a", "stop", 2)
    >>> pair_problem(ok, Generation("a ", "stop", 2), False, ("positive", "negative"))
    'responses identical'
    >>> pair_problem(ok, Generation("b", "length", 9), False, ("first", "second"))
    'second response truncated'
    >>> pair_problem(ok, Generation("b", "length", 9), True, ("first", "second")) is None
    True
    """
    for name, gen in zip(names, (a, b), strict=True):
        if not gen.text.strip():
            return f"{name} response empty"
        if gen.finish_reason == "length" and not keep_truncated:
            return f"{name} response truncated"
    if a.text.strip() == b.text.strip():
        return "responses identical"
    return None


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _PromptStep(Step):
    """Shared parts of the steps that read prompts and sample from a policy."""

    input_columns = "prompt (text or messages) or messages"
    required_columns = PROMPT_COLUMNS
    model: Engine
    sampling: SamplingConfig
    room: int | None

    def prepare(self, row: Any) -> tuple[Message, ...]:
        return check_prompt(row, self.model, self.sampling, self.room)

    def _policy(
        self,
        model: str | Engine | LoadedModel,
        sampling: SamplingConfig | None,
        n: int,
        max_prompt_tokens: int | None,
        load_options: LoadOptions | None,
    ) -> None:
        """Hold the policy, its sampling settings with ``n`` samples per prompt, and the room
        left for prompts."""
        self.model = as_engine(model, load_options)
        self.sampling = replace(sampling or SamplingConfig(), n=n)
        self.room = prompt_room(self.model, self.sampling, max_prompt_tokens)


class RLAIFStep(_PromptStep):
    """RLAIF pairs (``prefsmith rlaif``): two samples, a pairwise judge in both orders.

    Output columns: the TRL pair, ``chosen_index`` (which sample won, 0 or 1),
    ``judge_margins`` (``{"first_vs_second", "swapped"}``), ``judge_margin`` (mean preference
    for the chosen response), ``finish_reasons``, ``generated_with`` and ``judged_with``.
    Dropped: ``judge tie``, ``judge disagrees across orders``, and empty, truncated or
    identical samples.

    Args:
        model: The policy.
        judge: The :class:`PairwiseJudge`.
        sampling: How to sample (``n`` is forced to 2).
        fmt: ``conversational`` or ``standard`` output.
        keep_truncated: Keep samples that hit ``max_new_tokens``.
        max_prompt_tokens: Prompts longer than this are rejected.
        load_options: How the policy loads.

    >>> from prefsmith.data.runner import process_rows
    >>> from prefsmith.testing import tiny_backend, tiny_model
    >>> step = RLAIFStep(tiny_model(seed=0), PairwiseJudge(tiny_backend(seed=1)),
    ...                  SamplingConfig(max_new_tokens=6))
    >>> rows = process_rows([{"prompt": "Name a colour."}, {"prompt": "Name a fruit."}], step)
    >>> all(r["chosen_index"] in (0, 1) and r["judge_margin"] > 0 for r in rows)
    True
    """

    name = "rlaif"
    output_columns = ("prompt", "chosen", "rejected", "chosen_index", "judge_margin")

    def __init__(
        self,
        model: str | Engine | LoadedModel,
        judge: PairwiseJudge,
        sampling: SamplingConfig | None = None,
        fmt: PairFormat = "conversational",
        keep_truncated: bool = True,
        max_prompt_tokens: int | None = None,
        load_options: LoadOptions | None = None,
    ) -> None:
        self.judge = judge
        self._policy(model, sampling, 2, max_prompt_tokens, load_options)
        self.fmt, self.keep_truncated = fmt, keep_truncated

    def settings(self) -> dict[str, Any]:
        return {
            **generator_settings(self.model, self.sampling),
            "format": self.fmt,
            "keep_truncated": self.keep_truncated,
            "judge": {**self.judge.settings(), "prompt": self.judge.template},
        }

    def process(self, batch: Sequence[RowItem], advance: Advance) -> list[Outcome]:
        settings = generator_settings(self.model, self.sampling)
        samples = generate(self.model, [b.item for b in batch], self.sampling)
        advance(len(batch) / 2)
        ok = [k for k, (a, b) in enumerate(samples) if not self._problem(a, b)]
        verdicts = self.judge.compare(
            [batch[k].item for k in ok],
            [samples[k][0].text for k in ok],
            [samples[k][1].text for k in ok],
        )
        verdict_of = dict(zip(ok, verdicts, strict=True))
        judged_with = self.judge.settings()
        outcomes = []
        for k, b in enumerate(batch):
            a, z = samples[k]
            counts = {"tokens": a.n_tokens + z.n_tokens}
            if k not in verdict_of:
                why = self._problem(a, z)
                outcomes.append(Outcome(dropped=why, counts=counts))
                continue
            verdict = verdict_of[k]
            counts["judged"] = 1
            winner = verdict.winner
            if winner in ("tie", "disagree"):
                why = "judge tie" if winner == "tie" else "judge disagrees across orders"
                outcomes.append(Outcome(dropped=why, counts=counts))
                continue
            chosen, rejected = (a, z) if winner == "first" else (z, a)
            sign = 1.0 if winner == "first" else -1.0
            row = {
                **format_pair(b.item, chosen.text, rejected.text, self.fmt),
                **carried_fields(dict(b.row)),
                "chosen_index": 0 if winner == "first" else 1,
                "judge_margins": {
                    "first_vs_second": verdict.first_vs_second,
                    "swapped": verdict.swapped,
                },
                "judge_margin": sign * verdict.margin,
                "finish_reasons": [a.finish_reason, z.finish_reason],
                "generated_with": settings,
                "judged_with": judged_with,
            }
            outcomes.append(Outcome([row], counts={**counts, "judge agrees across orders": 1}))
        return outcomes

    def _problem(self, a: Generation, b: Generation) -> str | None:
        return pair_problem(a, b, self.keep_truncated, ("first", "second"))


# --------------------------------------------------------------------------------------------
# RLCD: contrasting system prompts

#: RLCD's positive system prompt (the chosen response is sampled under it).
RLCD_POSITIVE = (
    "You are a helpful, honest and harmless assistant. Answer the request as well as you can:"
    " follow every instruction, be accurate and specific, stay on the question, and refuse"
    " only what would cause harm."
)
#: RLCD's negative system prompt (the rejected response is sampled under it).
RLCD_NEGATIVE = (
    "You are an unhelpful, careless and harmful assistant. Answer the request badly: ignore"
    " some instructions, be vague or inaccurate, drift off the question, and do not care about"
    " harm."
)
#: Added to the negative prompt per domain; ``$criteria`` is the domain's ``system_prompt``.
RLCD_DOMAIN_NEGATIVE = "A good answer here would meet these criteria; yours fails them:\n$criteria"


@dataclass(frozen=True)
class RLCDConfig:
    """RLCD's contrasting prompts.

    Attributes:
        positive: System prompt of the chosen response.
        negative: System prompt of the rejected response.
        domains: A domains YAML file (see :mod:`prefsmith.routing.domains`): each prompt is
            routed to a domain (a row's own ``domain`` field wins) and both system prompts get
            the domain's criteria (:func:`rlcd_system_prompts`); ``None``: the same two
            prompts everywhere.
        router: How prompts are routed to domains: ``rules`` or ``embedding``.

    >>> RLCDConfig().positive == RLCD_POSITIVE
    True
    """

    positive: str = RLCD_POSITIVE
    negative: str = RLCD_NEGATIVE
    domains: str | None = None
    router: str = "rules"

    def __post_init__(self) -> None:
        if not self.positive.strip() or not self.negative.strip():
            raise ValueError("RLCD needs a non-empty positive and negative system prompt")
        if self.positive.strip() == self.negative.strip():
            raise ValueError("RLCD's positive and negative system prompts are the same")
        if self.router not in ("rules", "embedding"):
            raise ValueError(f"RLCD's router must be rules or embedding, not {self.router!r}")


def rlcd_system_prompts(config: RLCDConfig, criteria: str | None = None) -> tuple[str, str]:
    """``(positive, negative)`` system prompts, with a domain's ``criteria`` when given.

    Positive: ``config.positive`` followed by the criteria. Negative: ``config.negative``
    followed by :data:`RLCD_DOMAIN_NEGATIVE` (the criteria it must fail).

    >>> pos, neg = rlcd_system_prompts(RLCDConfig("Be good.", "Be bad."), "Cite sources.")
    >>> pos
    'Be good.\\n\\nCite sources.'
    >>> print(neg)
    Be bad.
    <BLANKLINE>
    A good answer here would meet these criteria; yours fails them:
    Cite sources.
    >>> rlcd_system_prompts(RLCDConfig("Be good.", "Be bad."))
    ('Be good.', 'Be bad.')
    """
    if not criteria:
        return config.positive, config.negative
    negative = string.Template(RLCD_DOMAIN_NEGATIVE).substitute(criteria=criteria.strip())
    return f"{config.positive}\n\n{criteria.strip()}", f"{config.negative}\n\n{negative}"


def with_rlcd_system(context: Sequence[Message], system: str) -> list[Message]:
    """``context`` under ``system``: a new first turn, or merged before the row's own one.

    >>> with_rlcd_system([{"role": "user", "content": "Hi"}], "Be good.")[0]["content"]
    'Be good.'
    >>> with_rlcd_system([{"role": "system", "content": "Be brief."},
    ...                   {"role": "user", "content": "Hi"}], "Be good.")[0]["content"]
    'Be good.\\n\\nBe brief.'
    """
    turns = [dict(m) for m in context]
    if turns and turns[0]["role"] == "system":
        turns[0]["content"] = f"{system}\n\n{turns[0]['content']}"
        return turns  # type: ignore[return-value]
    return [{"role": "system", "content": system}, *turns]  # type: ignore[list-item]


class RLCDStep(_PromptStep):
    """RLCD pairs (``prefsmith rlcd``): positive vs. negative system prompt, positive chosen.

    Output columns: the TRL pair on the original prompt, ``rlcd_system_prompts``
    (``{"positive", "negative"}`` as used for the row), ``rlcd_domain`` (with domains),
    ``finish_reasons``, ``generated_with``. Dropped: empty, truncated or identical responses.

    Args:
        model: The policy.
        config: The two prompts and the domains.
        sampling: How to sample (``n`` is forced to 1 per prompt).
        fmt, keep_truncated, max_prompt_tokens, load_options: as for :class:`RLAIFStep`.

    >>> from prefsmith.data.runner import process_rows
    >>> from prefsmith.testing import tiny_model
    >>> step = RLCDStep(tiny_model(seed=0), sampling=SamplingConfig(max_new_tokens=6))
    >>> row = process_rows([{"prompt": "Name a colour."}], step)[0]
    >>> row["prompt"], row["rlcd_system_prompts"]["positive"] == RLCD_POSITIVE
    ([{'role': 'user', 'content': 'Name a colour.'}], True)
    """

    name = "rlcd"
    output_columns = ("prompt", "chosen", "rejected", "rlcd_system_prompts", "rlcd_domain")

    def __init__(
        self,
        model: str | Engine | LoadedModel,
        config: RLCDConfig | None = None,
        sampling: SamplingConfig | None = None,
        fmt: PairFormat = "conversational",
        keep_truncated: bool = True,
        max_prompt_tokens: int | None = None,
        load_options: LoadOptions | None = None,
    ) -> None:
        self._policy(model, sampling, 1, max_prompt_tokens, load_options)
        self.config = config or RLCDConfig()
        self.fmt, self.keep_truncated = fmt, keep_truncated
        self.domains: Any = None
        self._router: Any = None
        if self.config.domains is not None:
            from prefsmith.routing.domains import load_domains

            self.domains = load_domains(self.config.domains)

    def settings(self) -> dict[str, Any]:
        return {
            **generator_settings(self.model, self.sampling),
            "rlcd": asdict(self.config),
            "domains_hash": _hash(Path(self.config.domains).read_text())
            if self.config.domains
            else None,
            "format": self.fmt,
            "keep_truncated": self.keep_truncated,
        }

    def system_prompts(self, rows: Sequence[RowItem]) -> list[tuple[str | None, str, str]]:
        """``(domain, positive, negative)`` per row."""
        if self.domains is None:
            return [(None, *rlcd_system_prompts(self.config))] * len(rows)
        from prefsmith.routing.routers import last_user_text, make_router

        if self._router is None:
            self._router = make_router(self.config.router, self.domains)
        names = set(self.domains.names)
        to_route = [k for k, b in enumerate(rows) if b.row.get("domain") not in names]
        routes = self._router.route([last_user_text(rows[k].item) for k in to_route])
        domain_of = {k: r.domain for k, r in zip(to_route, routes, strict=True)}
        out = []
        for k, b in enumerate(rows):
            name = domain_of.get(k, b.row.get("domain"))
            criteria = self.domains[name].system_prompt
            out.append((name, *rlcd_system_prompts(self.config, criteria)))
        return out

    def process(self, batch: Sequence[RowItem], advance: Advance) -> list[Outcome]:
        settings = generator_settings(self.model, self.sampling)
        prompts = self.system_prompts(batch)
        conversations = []
        for b, (_, positive, negative) in zip(batch, prompts, strict=True):
            conversations += [
                with_rlcd_system(b.item, positive),
                with_rlcd_system(b.item, negative),
            ]
        gens = [g[0] for g in generate(self.model, conversations, self.sampling)]
        outcomes = []
        for k, b in enumerate(batch):
            pos, neg = gens[2 * k], gens[2 * k + 1]
            counts = {"tokens": pos.n_tokens + neg.n_tokens}
            why = pair_problem(pos, neg, self.keep_truncated, ("positive", "negative"))
            if why is not None:
                outcomes.append(Outcome(dropped=why, counts=counts))
                continue
            domain, positive, negative = prompts[k]
            row = {
                **format_pair(b.item, pos.text, neg.text, self.fmt),
                **carried_fields(dict(b.row)),
                "rlcd_system_prompts": {"positive": positive, "negative": negative},
                "finish_reasons": {"positive": pos.finish_reason, "negative": neg.finish_reason},
                "generated_with": settings,
            }
            if domain is not None:
                row["rlcd_domain"] = domain
                counts[f"domain {domain}"] = 1
            outcomes.append(Outcome([row], counts=counts))
        return outcomes


# --------------------------------------------------------------------------------------------
# West-of-N: best vs. worst of N under a reward


class WestOfNStep(_PromptStep):
    """West-of-N pairs (``prefsmith west-of-n``): N samples, best vs. worst under a reward.

    ``sample`` and ``pairs`` (:class:`~prefsmith.generation.pairs.PairsStep`) in one step: the
    output has ``pairs``' columns (``reward_chosen``, ``reward_margin``,
    ``candidate_rewards``, ...) and ``generated_with``.

    Args:
        model: The policy.
        reward: Any reward (density ratio, ``rm:PATH``, ...: see
            :mod:`prefsmith.rewards.spec`).
        sampling: How to sample (``n`` >= 2: the N).
        options: Pair selection and format (:class:`~prefsmith.generation.pairs.PairsOptions`).
        max_prompt_tokens, load_options: as for :class:`RLAIFStep`.

    >>> from prefsmith.data.runner import process_rows
    >>> from prefsmith.rewards.density_ratio import DensityRatioReward
    >>> from prefsmith.testing import tiny_backend, tiny_model
    >>> reward = DensityRatioReward(tiny_backend(seed=0), tiny_backend(seed=1))
    >>> step = WestOfNStep(tiny_model(seed=0), reward, SamplingConfig(n=3, max_new_tokens=6))
    >>> rows = process_rows([{"prompt": "Name a colour."}], step)
    >>> [r["reward_margin"] > 0 for r in rows]
    [True]
    """

    name = "west-of-n"
    output_columns = (*PairsStep.output_columns, "generated_with")

    def __init__(
        self,
        model: str | Engine | LoadedModel,
        reward: Reward,
        sampling: SamplingConfig | None = None,
        options: PairsOptions | None = None,
        max_prompt_tokens: int | None = None,
        load_options: LoadOptions | None = None,
    ) -> None:
        self.sampling = sampling or SamplingConfig()
        if self.sampling.n < 2:
            raise ValueError(
                f"west-of-n needs at least 2 samples per prompt, got n={self.sampling.n}"
            )
        self.sampler = SampleStep(model, self.sampling, max_prompt_tokens, load_options)
        self.model, self.room = self.sampler.model, self.sampler.room
        self.pairs = PairsStep(reward, options)

    def settings(self) -> dict[str, Any]:
        return {"sample": self.sampler.settings(), "pairs": self.pairs.settings()}

    def process(self, batch: Sequence[RowItem], advance: Advance) -> list[Outcome]:
        sampled = self.sampler.process(batch, lambda k: advance(k / 2))
        items, counts = [], []
        for b, outcome in zip(batch, sampled, strict=True):
            row = outcome.rows[0]
            items.append(
                RowItem(b.key, b.location, row, prepare_candidates(row, self.pairs.options))
            )
            counts.append(outcome.counts)
        paired = self.pairs.process(items, lambda k: advance(k / 2))
        return [
            Outcome(outcome.rows, outcome.dropped, {**outcome.counts, **extra})
            for outcome, extra in zip(paired, counts, strict=True)
        ]
