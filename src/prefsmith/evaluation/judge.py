"""Judge a tuned policy against its starting point: both answer held-out prompts, a judge
scorer (any scorer spec, :mod:`prefsmith.rewards.spec`; by default the density ratio) scores
both answers, and the tuned policy's win rate is reported with a confidence interval.

A policy tuned toward a reward is favoured by that reward: judge with a scorer that did not
label the training pairs (another model pair, the contrast scorer of another model, a trained
reward model). Every judged row and ``summary.json`` carry the judge's name (``judge``).

Counting: a prompt is a win when the tuned answer's reward is greater than the baseline's by
more than ``tie_tolerance``, a loss when it is smaller by more than that, a tie otherwise
(identical answers always tie). Win rate = (wins + ties / 2) / prompts. The 95 % interval is
Wilson's score interval on that rate with n = prompts; a tie has less variance than a win or a
loss, so with ties the interval is conservative. A percentile bootstrap over prompts is offered
as well (``ci="bootstrap"``).

The judged conversation is the prompt alone (no goal system message): the scorer judges the
answer to the user, not how well the policy followed a goal. The tuned policy is conditioned
on ``goal`` (the relabel template with the highest goal) when given; the baseline on
``baseline_goal`` (default: none, the starting policy as it is normally used).

Stages are cached in the output folder (``answers-tuned.jsonl``, ``answers-baseline.jsonl``,
``judged.jsonl``, ``summary.json``), so an interrupted run resumes at the stage it stopped in.
"""

from __future__ import annotations

import gc
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefsmith.data.io import iter_records, read_jsonl_rows
from prefsmith.data.messages import Message
from prefsmith.data.rows import RowError
from prefsmith.defaults import (
    DEFAULT_REDUCTION,
    DEFAULT_SEED,
    DEFAULT_STRONG,
    DEFAULT_WEAK,
    ReductionName,
)
from prefsmith.generation.sampling import SamplingConfig, generate
from prefsmith.models.backend import ScoreRequest
from prefsmith.models.loading import LoadOptions, load_model
from prefsmith.models.pool import ModelOptions, ModelPool
from prefsmith.relabel.pairs import goal_message, load_template, with_goal
from prefsmith.relabel.scale import GoalScale
from prefsmith.rewards.base import Reward
from prefsmith.rewards.spec import ScorerSpec

#: Prompts of ``prefsmith judge`` by default: MT-Bench, shipped with the package (Apache-2.0).
MT_BENCH = Path(__file__).resolve().parents[1] / "resources" / "prompts" / "mt-bench.jsonl"


@dataclass(frozen=True)
class WinRate:
    """Outcome counts and the win rate with its 95 % interval.

    Attributes:
        wins: Prompts where the tuned answer scored higher.
        losses: Prompts where it scored lower.
        ties: Prompts within the tie tolerance.
        rate: (wins + ties / 2) / n.
        low: Lower end of the interval.
        high: Upper end of the interval.
        method: ``wilson`` or ``bootstrap``.
    """

    wins: int
    losses: int
    ties: int
    rate: float
    low: float
    high: float
    method: str

    @property
    def n(self) -> int:
        """Number of prompts judged."""
        return self.wins + self.losses + self.ties


def wilson_interval(rate: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default).

    >>> lo, hi = wilson_interval(0.5, 100)
    >>> round(lo, 3), round(hi, 3)
    (0.404, 0.596)
    >>> wilson_interval(1.0, 0)
    (0.0, 1.0)
    """
    if n == 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def outcomes(tuned: Sequence[float], baseline: Sequence[float], tol: float = 0.0) -> list[float]:
    """Per prompt: 1 (tuned wins), 0 (loses) or 0.5 (tie within ``tol``).

    >>> outcomes([3.0, 1.0, 2.0], [1.0, 2.0, 2.0])
    [1.0, 0.0, 0.5]
    >>> outcomes([1.05], [1.0], tol=0.1)
    [0.5]
    """
    out = []
    for a, b in zip(tuned, baseline, strict=True):
        out.append(0.5 if abs(a - b) <= tol else (1.0 if a > b else 0.0))
    return out


def win_rate(
    scores: Sequence[float], ci: str = "wilson", n_boot: int = 2000, seed: int = DEFAULT_SEED
) -> WinRate:
    """Summarize per-prompt outcomes (see :func:`outcomes`); ties count half.

    >>> w = win_rate([1.0, 1.0, 1.0, 0.0, 0.5])
    >>> (w.wins, w.losses, w.ties, w.rate), (round(w.low, 3), round(w.high, 3))
    ((3, 1, 1, 0.7), (0.299, 0.927))
    """
    n = len(scores)
    wins = sum(1 for s in scores if s == 1.0)
    losses = sum(1 for s in scores if s == 0.0)
    ties = n - wins - losses
    rate = (wins + ties / 2) / n if n else 0.0
    if ci == "wilson":
        low, high = wilson_interval(rate, n)
    elif ci == "bootstrap":
        rng = random.Random(seed)
        means = sorted(sum(rng.choices(scores, k=n)) / n for _ in range(n_boot)) if n else [0.0]
        low, high = means[int(0.025 * (len(means) - 1))], means[int(0.975 * (len(means) - 1))]
    else:
        raise ValueError(f"ci must be wilson or bootstrap, not {ci!r}")
    return WinRate(wins, losses, ties, rate, low, high, ci)


def first_turn(row: Any) -> str:
    """The first user turn of a prompt row (``turns[0]``, else ``prompt``).

    >>> first_turn({"prompt": "a", "turns": ["b", "c"]}), first_turn({"prompt": "a"})
    ('b', 'a')
    """
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    turns = row.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[0], str) and turns[0].strip():
        return turns[0]
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    raise ValueError("needs a non-empty 'turns' list or 'prompt' string")


def read_prompts(path: str | Path, limit: int = 0, offset: int = 0) -> list[tuple[str, str]]:
    """``(id, first user turn)`` of the prompts ``offset .. offset + limit`` of ``path``."""
    out = []
    for record in iter_records(path):
        if record.index < offset:
            continue
        if limit and len(out) >= limit:
            break
        try:
            if record.error is not None:
                raise ValueError(record.error)
            text = first_turn(record.value)
        except ValueError as err:
            raise RowError(record.location, str(err)) from None
        out.append((str(record.value.get("id", record.index)), text))
    if not out:
        raise ValueError(f"{path}: no prompts (offset {offset})")
    return out


@dataclass(frozen=True)
class JudgeOptions:
    """Options of :func:`judge`.

    Attributes:
        goal: Goal given to the tuned policy in the relabel template's system message;
            ``None`` = no system message.
        baseline_goal: Same for the baseline (default: none).
        template: Goal template file (``None`` = the shipped one).
        scale_low: Low end of the goal scale named in the template.
        scale_high: High end of the goal scale named in the template.
        scorer: The judge: a scorer spec (``density-ratio:STRONG,WEAK``, ``contrast:MODEL``,
            ``rm:PATH``, ...; see :mod:`prefsmith.rewards.spec`); ``None``: the density ratio
            of ``strong`` over ``weak`` with ``reduction``. The default, the contrast scorer
            of ``strong``, is not the density ratio that labels pairs by default: a policy
            tuned toward a reward is favoured by it, so judge with one that did not label the
            training pairs (the run says when it did).
        strong: Strong model of the judge (models a spec leaves out).
        weak: Weak model of the judge.
        reduction: Density-ratio reduction (``sum``, ``mean``, ``mean-char``).
        max_new_tokens: Longest answer.
        temperature: Sampling temperature (0 = greedy).
        top_p: Nucleus sampling threshold.
        seed: Sampling seed (the same for both policies).
        batch_size: Prompts generated together.
        tie_tolerance: Reward differences up to this count as ties.
        ci: ``wilson`` or ``bootstrap``.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: Torch CPU threads.
    """

    goal: float | None = None
    baseline_goal: float | None = None
    template: str | None = None
    scale_low: float = 1.0
    scale_high: float = 10.0
    scorer: str | None = "contrast:mean-char"
    strong: str = DEFAULT_STRONG
    weak: str = DEFAULT_WEAK
    reduction: ReductionName = DEFAULT_REDUCTION
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.85
    seed: int = DEFAULT_SEED
    batch_size: int = 8
    tie_tolerance: float = 0.0
    ci: Literal["wilson", "bootstrap"] = "wilson"
    device: str = "auto"
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def scorer_spec(self) -> str:
        """The judge's scorer spec written out in full (models filled in).

        >>> JudgeOptions(strong="a", weak="b").scorer_spec()
        'contrast:a:mean-char'
        >>> JudgeOptions(scorer=None, strong="a", weak="b").scorer_spec()
        'density-ratio:a,b:sum'
        >>> JudgeOptions(scorer="contrast:c", strong="a", weak="b").scorer_spec()
        'contrast:c:sum'
        """
        text = self.scorer or f"density-ratio:{self.reduction}"
        return ScorerSpec.parse(text, self.strong, self.weak).name


def training_labeler(tuned: str | Path) -> dict[str, str] | None:
    """The scorer that labeled the pairs ``tuned`` was trained on, when its training run says:
    ``train_config.yaml`` beside the model (``train/final``'s parent) names the data, and the
    data's ``.settings.json`` the scorer (``{"scorer": ..., "data": ...}``; ``None`` when
    either is missing, e.g. a hub model or pairs made elsewhere).

    >>> training_labeler("/nonexistent/final") is None
    True
    """
    from prefsmith.data.io import load_json_file, load_yaml_file

    folder = Path(tuned)
    for config_path in (folder / "train_config.yaml", folder.parent / "train_config.yaml"):
        if not config_path.is_file():
            continue
        data = (load_yaml_file(config_path) or {}).get("data")
        settings_path = Path(f"{data}.settings.json") if data else None
        if settings_path is None or not settings_path.is_file():
            return None
        for value in (load_json_file(settings_path).get("settings") or {}).values():
            if isinstance(value, dict) and isinstance(value.get("scorer"), str):
                return {"scorer": value["scorer"], "data": str(data)}
        return None
    return None


def judge_reward(options: JudgeOptions, customization: Any = None) -> Reward:
    """The judge's reward (:meth:`JudgeOptions.scorer_spec`) on ``options``' device/threads,
    with ``customization`` (a :class:`~prefsmith.routing.customize.Customization`) if given.

    >>> from prefsmith.testing import tiny_model
    >>> reward = judge_reward(JudgeOptions(scorer="logprob:mean", strong=tiny_model(seed=0)))
    >>> reward.name == f"logprob:{tiny_model(seed=0)}:mean"
    True
    """
    pool = ModelPool(ModelOptions(device=options.device, threads=options.threads))  # type: ignore[arg-type]
    return ScorerSpec.parse(options.scorer_spec()).build(pool, customization)


def _conversation(prompt: str, goal: float | None, options: JudgeOptions) -> list[Message]:
    messages: list[Message] = [{"role": "user", "content": prompt}]
    if goal is None:
        return messages
    scale = GoalScale(low=options.scale_low, high=options.scale_high)
    return with_goal(messages, goal_message(goal, load_template(options.template), scale))


def _sampling_key(options: JudgeOptions) -> dict[str, Any]:
    """What decides an answer besides the model and goal (cached answers must match it)."""
    keys = ("max_new_tokens", "temperature", "top_p", "seed", "template", "scale_low", "scale_high")
    return {k: getattr(options, k) for k in keys}


def _judge_key(reward: Reward, options: JudgeOptions) -> dict[str, Any]:
    """What decides a judgement (cached judgements must match it): the judge's name (with
    ``+cdr`` when customized) and the tie tolerance."""
    return {"scorer": reward.name, "tie_tolerance": options.tie_tolerance}


def generate_answers(
    model: str,
    prompts: Sequence[tuple[str, str]],
    goal: float | None,
    options: JudgeOptions,
    path: Path,
) -> list[dict[str, Any]]:
    """Answers of ``model`` to ``prompts`` (one sample each), cached in ``path``."""
    sampling = _sampling_key(options)
    cached = read_jsonl_rows(path)
    if [r["id"] for r in cached] == [p[0] for p in prompts] and all(
        r["model"] == model and r["goal"] == goal and r.get("sampling") == sampling for r in cached
    ):
        return cached
    loaded = load_model(model, LoadOptions(device=options.device, threads=options.threads))  # type: ignore[arg-type]
    config = SamplingConfig(
        n=1,
        temperature=options.temperature,
        top_p=options.top_p,
        max_new_tokens=options.max_new_tokens,
        seed=options.seed,
        batch_size=options.batch_size,
    )
    conversations = [_conversation(text, goal, options) for _, text in prompts]
    generations = generate(loaded, conversations, config)
    rows = [
        {
            "id": pid,
            "prompt": text,
            "answer": gens[0].text,
            "finish_reason": gens[0].finish_reason,
            "n_tokens": gens[0].n_tokens,
            "model": model,
            "goal": goal,
            "sampling": sampling,
        }
        for (pid, text), gens in zip(prompts, generations, strict=True)
    ]
    del loaded
    gc.collect()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(path)
    return rows


def judge(
    tuned: str,
    baseline: str,
    prompts: Sequence[tuple[str, str]],
    output_dir: str | Path,
    options: JudgeOptions | None = None,
    customization: Any = None,
) -> tuple[WinRate, list[dict[str, Any]]]:
    """Generate with both policies, score both answers with the judge, count wins (module doc).

    ``customization`` (a :class:`~prefsmith.routing.customize.Customization`) customizes the
    judge's contexts (the customized density ratio).
    """
    options = options or JudgeOptions()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = generate_answers(tuned, prompts, options.goal, options, out / "answers-tuned.jsonl")
    b = generate_answers(
        baseline, prompts, options.baseline_goal, options, out / "answers-baseline.jsonl"
    )
    judged_path = out / "judged.jsonl"
    judged = read_jsonl_rows(judged_path)
    reward = judge_reward(options, customization)
    judge_key = _judge_key(reward, options)
    fresh = [(r["id"], r["tuned"], r["baseline"], r.get("judge")) for r in judged] == [
        (p[0], x["answer"], y["answer"], judge_key) for p, x, y in zip(prompts, a, b, strict=True)
    ]
    if not fresh:
        requests = [
            ScoreRequest(({"role": "user", "content": text},), answer)
            for (_, text), row_a, row_b in zip(prompts, a, b, strict=True)
            for answer in (row_a["answer"] or " ", row_b["answer"] or " ")
        ]
        rewards = [r.reward for r in reward.score_requests(requests)]
        judged = []
        for i, (pid, text) in enumerate(prompts):
            r_a, r_b = rewards[2 * i], rewards[2 * i + 1]
            same = a[i]["answer"] == b[i]["answer"]
            outcome = 0.5 if same else outcomes([r_a], [r_b], options.tie_tolerance)[0]
            judged.append(
                {
                    "id": pid,
                    "prompt": text,
                    "tuned": a[i]["answer"],
                    "baseline": b[i]["answer"],
                    "reward_tuned": r_a,
                    "reward_baseline": r_b,
                    "outcome": outcome,
                    "judge": judge_key,
                }
            )
        judged_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in judged))
    result = win_rate([r["outcome"] for r in judged], options.ci, seed=options.seed)
    labeler = training_labeler(tuned)
    summary = {
        "tuned": tuned,
        "baseline": baseline,
        "prompts": len(prompts),
        "judge": reward.name,
        "labeler": labeler,
        "judge_is_labeler": None if labeler is None else labeler["scorer"] == reward.name,
        "win_rate": asdict(result),
        "mean_reward_tuned": sum(r["reward_tuned"] for r in judged) / len(judged),
        "mean_reward_baseline": sum(r["reward_baseline"] for r in judged) / len(judged),
        "mean_tokens_tuned": sum(r["n_tokens"] for r in a) / len(a),
        "mean_tokens_baseline": sum(r["n_tokens"] for r in b) / len(b),
        "options": asdict(options),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return result, judged
