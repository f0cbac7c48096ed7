"""RMBoost: preference-conditional, multi-aspect synthetic pairs (``prefsmith rmboost``).

For each prompt (Shen et al., 2024; the method: ``docs/methods.md``, RMBoost):

1. sample a first response (seeded like sample 0 of ``prefsmith sample`` with the same
   settings);
2. draw the preference label with a seeded RNG: the new response must be ``better`` or
   ``worse`` than the first (:func:`draw_label_and_aspects`);
3. draw ``num_aspects`` quality aspects from the configured list, or, with ``aspect_sets``,
   route the prompt to a domain and take ALL aspects of that domain's set
   (:class:`AspectSets`; shipped: ``resources/rmboost/aspect-sets.yaml``);
4. ask the generator for a second response conditioned on the prompt, the first response, the
   label and the aspects (:func:`rewrite_messages`, wording in ``resources/rmboost/``);
5. order the pair by the label (:func:`order_pair`): ``better`` makes the second response the
   chosen one, ``worse`` the rejected one.

Rows whose first or second response is empty or truncated, or whose second response repeats
the first, give no pair (their reason is recorded). Optionally each pair is checked with the
density-ratio scorer (or any reward) on the original prompt: ``scorer_agrees`` is whether
reward(chosen) > reward(rejected) (a tie counts as disagreement, as in RewardBench), and
``filter_agreement`` keeps only agreeing pairs. With a calibrated check (``fitted:FILE``, an
``eval --fit calibration`` model) each pair also carries ``p_chosen``, and ``min_probability``
keeps only pairs the check prefers with a probability above a threshold.

:class:`RMBoostStep` is the stage; :func:`~prefsmith.data.runner.run_rows` runs it on files.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from prefsmith.data.io import BadFileError, read_text_file
from prefsmith.data.messages import Message
from prefsmith.data.rows import PROMPT_COLUMNS, ScoringItem
from prefsmith.data.step import Advance, Outcome, RowItem, Step
from prefsmith.data.templates import check_placeholders
from prefsmith.defaults import DEFAULT_SEED
from prefsmith.generation.pairs import (
    PairFormat,
    carried_fields,
    check_probability_threshold,
    format_pair,
)
from prefsmith.generation.sampling import (
    Generation,
    SamplingConfig,
    check_prompt,
    generate,
    generator_settings,
    prompt_room,
)
from prefsmith.models.engines import Engine, as_engine
from prefsmith.models.loading import LoadedModel, LoadOptions
from prefsmith.rewards.base import Reward, scored_with, short_hash, sigmoid

Label = Literal["better", "worse"]

#: Aspects drawn from by default (the RMBoost paper's general-purpose set).
DEFAULT_ASPECTS = ("helpfulness", "relevance", "completeness", "correctness", "harmlessness")


@dataclass(frozen=True)
class RMBoostConfig:
    """What RMBoost asks the generator for.

    Attributes:
        aspects: Quality aspects to draw from.
        num_aspects: Aspects drawn per row, without replacement (``0``: all of them).
        p_better: Probability that the label is ``better`` (the second response must improve
            on the first); otherwise ``worse``.
        seed: Seed of the label and aspect draws (row ``i`` uses ``(seed, i)``).
        templates: Folder with ``system.txt``, ``better.txt``, ``worse.txt`` and optionally
            ``aspects.txt``; ``None``: prefsmith's own (``resources/rmboost``).
        keep_truncated: Keep pairs where a response hit ``max_new_tokens`` (their
            ``finish_reasons`` say so).
        aspect_sets: Aspect sets per domain: a YAML file, or ``default`` (the shipped
            ``resources/rmboost/aspect-sets.yaml``); each prompt is routed to a domain and the
            rewrite gets ALL aspects of its domain's set (rows gain ``domain``); ``aspects``
            and ``num_aspects`` are then unused. ``None``: draw from ``aspects``.

    >>> config = RMBoostConfig(num_aspects=1, seed=3)
    >>> label, aspects = draw_label_and_aspects(config, 0)
    >>> label in ("better", "worse"), len(aspects)
    (True, 1)
    """

    aspects: tuple[str, ...] = DEFAULT_ASPECTS
    num_aspects: int = 2
    p_better: float = 0.5
    seed: int = DEFAULT_SEED
    templates: str | None = None
    keep_truncated: bool = True
    aspect_sets: str | None = None

    def __post_init__(self) -> None:
        if not self.aspects:
            raise ValueError("give at least one aspect")
        if not 0 <= self.num_aspects <= len(self.aspects):
            raise ValueError(
                f"num_aspects must be between 0 and {len(self.aspects)} (the number of"
                f" aspects), got {self.num_aspects}"
            )
        if not 0 <= self.p_better <= 1:
            raise ValueError(f"p_better must be in [0, 1], got {self.p_better}")


@dataclass(frozen=True)
class AspectSets:
    """Aspect sets per domain (RMBoost conditions a rewrite on the task's whole aspect set).

    Attributes:
        sets: Domain name -> its aspects.
        fallback: The aspects of a domain without a set.
        domains: The domains file the prompts are routed with (a path or a shipped name).
        router: ``rules`` or ``embedding``.
        source: The file read.

    >>> sets = AspectSets.load("default")
    >>> sets.sets["code"]
    ('correctness', 'completeness', 'coherence')
    >>> sets.route(["Write a Python function that sorts a list."])
    [('code', ('correctness', 'completeness', 'coherence'))]
    """

    sets: dict[str, tuple[str, ...]]
    fallback: tuple[str, ...]
    domains: str
    router: str
    source: str

    @classmethod
    def load(cls, name: str) -> AspectSets:
        """Read ``name`` (``default`` or a YAML file); raise ``ValueError`` naming the file."""
        from prefsmith.data.io import load_yaml_file

        path = SHIPPED_ASPECT_SETS if name == "default" else Path(name)
        data = load_yaml_file(path)
        if not isinstance(data, dict) or not isinstance(data.get("sets"), dict):
            raise ValueError(f"{path}: expected a mapping with 'sets' (domain -> aspects)")
        unknown = set(data) - {"domains", "router", "sets", "fallback"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        sets = {str(k): _aspect_list(v, f"{path}: sets.{k}") for k, v in data["sets"].items()}
        fallback = _aspect_list(data.get("fallback", DEFAULT_ASPECTS), f"{path}: fallback")
        router = str(data.get("router", "rules"))
        if router not in ("rules", "embedding"):
            raise ValueError(f"{path}: router must be rules or embedding, not {router!r}")
        return cls(sets, fallback, str(data.get("domains", "default")), router, str(path))

    def route(self, prompts: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
        """Each prompt's domain and aspect set."""
        from prefsmith.routing.domains import load_domains
        from prefsmith.routing.routers import make_router

        domains = load_domains(self.domains)
        routes = make_router(self.router, domains).route(list(prompts))
        return [(r.domain, self.sets.get(r.domain, self.fallback)) for r in routes]


#: The shipped aspect sets (``aspect_sets: default``).
SHIPPED_ASPECT_SETS = Path(__file__).resolve().parents[1] / "resources/rmboost/aspect-sets.yaml"


def _aspect_list(value: Any, where: str) -> tuple[str, ...]:
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(a, str) for a in value)
    ):
        raise ValueError(f"{where}: give a non-empty list of aspect names")
    return tuple(value)


@dataclass(frozen=True)
class Templates:
    """The rewrite prompt's wording.

    Attributes:
        system: System turn.
        better: User turn template for the ``better`` label.
        worse: User turn template for the ``worse`` label.
        descriptions: Aspect name -> description.
        source: Folder the templates came from.
    """

    system: str
    better: str
    worse: str
    descriptions: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def fingerprint(self) -> str:
        """Hash of the wording, recorded with every row."""
        return short_hash(repr((self.system, self.better, self.worse, self.descriptions)))


PLACEHOLDERS = ("prompt", "response", "aspects")


def default_templates_dir() -> Path:
    """prefsmith's own RMBoost templates."""
    return Path(str(files("prefsmith").joinpath("resources/rmboost")))


def parse_aspect_descriptions(text: str, where: str = "aspects.txt") -> dict[str, str]:
    """Parse ``name: description`` lines (``#`` comments and blank lines ignored); errors name
    ``where`` (the file) and the line.

    >>> parse_aspect_descriptions("# c\\nhelpfulness: helps\\n\\nrelevance : on topic")
    {'helpfulness': 'helps', 'relevance': 'on topic'}
    """
    out = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, description = line.partition(":")
        if not sep:
            raise BadFileError(where, "expected 'name: description'", line_no)
        out[name.strip()] = description.strip()
    return out


def check_template(text: str, where: str) -> None:
    """Refuse a template with unknown placeholders or without every required one.

    >>> check_template("$prompt $response $aspects", "t")
    >>> check_template("$prompt $respons $aspects", "t")
    Traceback (most recent call last):
    ...
    ValueError: t: unknown placeholder $respons (known: $prompt, $response, $aspects)
    """
    check_placeholders(text, PLACEHOLDERS, PLACEHOLDERS, where)


def load_templates(folder: str | Path | None = None) -> Templates:
    """Read and check the templates in ``folder`` (default: prefsmith's own)."""
    folder = Path(folder) if folder is not None else default_templates_dir()
    texts = {}
    for name in ("system", "better", "worse"):
        path = folder / f"{name}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"RMBoost template {path} does not exist")
        texts[name] = read_text_file(path).strip()
    for name in ("better", "worse"):
        check_template(texts[name], str(folder / f"{name}.txt"))
    aspects_file = folder / "aspects.txt"
    descriptions = (
        parse_aspect_descriptions(read_text_file(aspects_file), str(aspects_file))
        if aspects_file.is_file()
        else {}
    )
    return Templates(texts["system"], texts["better"], texts["worse"], descriptions, str(folder))


def draw_label_and_aspects(config: RMBoostConfig, index: int) -> tuple[Label, tuple[str, ...]]:
    """The label and aspects of row ``index``: a pure function of ``(config, index)``.

    Aspects keep the order of ``config.aspects``.

    >>> cfg = RMBoostConfig(num_aspects=2, seed=3)
    >>> draw_label_and_aspects(cfg, 7) == draw_label_and_aspects(cfg, 7)
    True
    >>> label, aspects = draw_label_and_aspects(cfg, 7)
    >>> label in ("better", "worse"), len(aspects), set(aspects) <= set(cfg.aspects)
    (True, 2, True)
    >>> draw_label_and_aspects(RMBoostConfig(p_better=1.0, num_aspects=0), 0)[0]
    'better'
    """
    rng = random.Random(f"prefsmith-rmboost:{config.seed}:{index}")
    label: Label = "better" if rng.random() < config.p_better else "worse"
    k = config.num_aspects or len(config.aspects)
    picked = set(rng.sample(range(len(config.aspects)), k))
    return label, tuple(a for i, a in enumerate(config.aspects) if i in picked)


def render_prompt(context: Sequence[Message]) -> str:
    """The user's request as text for ``$prompt``: a single user turn as is, else a transcript.

    >>> render_prompt([{"role": "user", "content": "Hi?"}])
    'Hi?'
    >>> print(render_prompt([{"role": "system", "content": "Be brief."},
    ...                      {"role": "user", "content": "Hi?"}]))
    System: Be brief.
    <BLANKLINE>
    User: Hi?
    """
    if len(context) == 1 and context[0]["role"] == "user":
        return context[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in context)


def render_aspects(aspects: Sequence[str], descriptions: dict[str, str]) -> str:
    """One ``- name: description`` line per aspect (name only when not described).

    >>> print(render_aspects(["correctness", "wit"], {"correctness": "facts are right"}))
    - correctness: facts are right
    - wit
    """
    return "\n".join(
        f"- {a}: {descriptions[a]}" if descriptions.get(a) else f"- {a}" for a in aspects
    )


def rewrite_messages(
    context: Sequence[Message],
    first_response: str,
    label: Label,
    aspects: Sequence[str],
    templates: Templates,
) -> list[Message]:
    """The conversation asking for the second response.

    >>> body = "$prompt | $response | $aspects"
    >>> t = Templates("SYS", "better: " + body, "worse: " + body)
    >>> user = [{"role": "user", "content": "2+2?"}]
    >>> msgs = rewrite_messages(user, "5", "better", ["correctness"], t)
    >>> msgs[0], msgs[1]["content"]
    ({'role': 'system', 'content': 'SYS'}, 'better: 2+2? | 5 | - correctness')
    >>> rewrite_messages(user, "4", "worse", ["x"], t)[1]["content"]
    'worse: 2+2? | 4 | - x'
    """
    if label not in ("better", "worse"):
        raise ValueError(f"label must be 'better' or 'worse', got {label!r}")
    template = templates.better if label == "better" else templates.worse
    user = string.Template(template).substitute(
        prompt=render_prompt(context),
        response=first_response,
        aspects=render_aspects(aspects, templates.descriptions),
    )
    return [{"role": "system", "content": templates.system}, {"role": "user", "content": user}]


def order_pair(first: str, second: str, label: Label) -> tuple[str, str]:
    """``(chosen, rejected)``: the second response wins when the label is ``better``.

    >>> order_pair("first", "second", "better")
    ('second', 'first')
    >>> order_pair("first", "second", "worse")
    ('first', 'second')
    """
    if label == "better":
        return second, first
    if label == "worse":
        return first, second
    raise ValueError(f"label must be 'better' or 'worse', got {label!r}")


def pair_status(first: Generation, second: Generation | None, keep_truncated: bool) -> str:
    """``ok`` or why the row gives no pair.

    >>> ok = Generation("a", "stop", 2)
    >>> pair_status(ok, Generation("b", "stop", 2), False)
    'ok'
    >>> pair_status(ok, Generation("a", "stop", 2), False)
    'second response repeats the first'
    >>> pair_status(Generation("", "stop", 1), None, False)
    'first response empty'
    >>> pair_status(ok, Generation("b", "length", 9), False)
    'second response truncated'
    """
    for name, gen in (("first", first), ("second", second)):
        if gen is None:
            continue
        if not gen.text.strip():
            return f"{name} response empty"
        if gen.finish_reason == "length" and not keep_truncated:
            return f"{name} response truncated"
    if second is not None and second.text.strip() == first.text.strip():
        return "second response repeats the first"
    return "ok"


# --------------------------------------------------------------------------------------------
# The rmboost step


class RMBoostStep(Step):
    """RMBoost pairs (``prefsmith rmboost``): first response, drawn label, rewrite, TRL pair.

    Input columns: ``prompt`` (str or messages) or ``messages``. Output: one TRL pair per
    prompt (conversational or standard) with the input's other fields, ``rmboost_label``,
    ``aspects``, ``finish_reasons`` and ``n_tokens`` of both responses, ``generated_with``; with
    a ``check`` reward also ``reward_chosen``, ``reward_rejected``, ``reward_margin``,
    ``scorer_agrees`` and ``scored_with`` (and ``p_chosen`` when the check is calibrated).
    Rows without a pair are counted by reason. Both generations of a chunk run batched, like
    ``sample``.

    Args:
        model: The generator (name, engine or loaded model; see
            :class:`~prefsmith.generation.sampling.SampleStep`).
        sampling: How to sample (``n`` is forced to 1).
        config: Labels, aspects, templates.
        fmt: ``conversational`` or ``standard`` output.
        check: Score every pair with this reward and record whether it agrees with the label.
        filter_agreement: Keep only pairs the check agrees with.
        max_prompt_tokens: Prompts longer than this are rejected.
        load_options: How the generator's weights load.
        min_probability: Keep only pairs whose ``p_chosen`` under a calibrated ``check`` is
            strictly above this (``None``: no threshold).

    >>> from prefsmith.data.runner import process_rows
    >>> from prefsmith.testing import tiny_model
    >>> step = RMBoostStep(tiny_model(seed=0), SamplingConfig(max_new_tokens=6))
    >>> rows = process_rows([{"prompt": "Name a colour."}, {"prompt": "Name a fruit."}], step)
    >>> all(r["rmboost_label"] in ("better", "worse") for r in rows)
    True
    """

    name = "rmboost"
    input_columns = "prompt (text or messages) or messages"
    required_columns = PROMPT_COLUMNS
    output_columns = ("prompt", "chosen", "rejected", "rmboost_label", "aspects", "generated_with")

    def __init__(
        self,
        model: str | Engine | LoadedModel,
        sampling: SamplingConfig | None = None,
        config: RMBoostConfig | None = None,
        fmt: PairFormat = "conversational",
        check: Reward | None = None,
        filter_agreement: bool = False,
        max_prompt_tokens: int | None = None,
        load_options: LoadOptions | None = None,
        min_probability: float | None = None,
    ) -> None:
        if filter_agreement and check is None:
            raise ValueError("filtering on agreement needs the density-ratio check (--check)")
        check_probability_threshold(check, min_probability)
        self.min_probability = min_probability
        self.model = as_engine(model, load_options)
        self.sampling = replace(sampling or SamplingConfig(), n=1)
        self.config = config or RMBoostConfig()
        self.templates = load_templates(self.config.templates)
        sets = self.config.aspect_sets
        self.aspect_sets = AspectSets.load(sets) if sets is not None else None
        self.fmt, self.check, self.filter_agreement = fmt, check, filter_agreement
        self.room = prompt_room(self.model, self.sampling, max_prompt_tokens)

    def prepare(self, row: Any) -> tuple[Message, ...]:
        return check_prompt(row, self.model, self.sampling, self.room)

    def settings(self) -> dict[str, Any]:
        return {
            **generator_settings(self.model, self.sampling),
            "rmboost": self._config_settings(),
            "format": self.fmt,
            "check": self.check.settings() if self.check else None,
            "filter_agreement": self.filter_agreement,
            "min_probability": self.min_probability,
        }

    def _config_settings(self) -> dict[str, Any]:
        """The RMBoost settings recorded (``aspect_sets`` only when used)."""
        settings = {**asdict(self.config), "templates_hash": self.templates.fingerprint()}
        if self.aspect_sets is None:
            settings.pop("aspect_sets")
        else:
            sets = self.aspect_sets
            settings["aspect_sets"] = {
                "file": sets.source,
                "domains": sets.domains,
                "router": sets.router,
                "sets": {k: list(v) for k, v in sets.sets.items()},
                "fallback": list(sets.fallback),
            }
        return settings

    def _draws(self, batch: Sequence[RowItem]) -> list[tuple[Label, tuple[str, ...], str | None]]:
        """Each row's label, aspects and domain (``None`` without aspect sets)."""
        draws = [draw_label_and_aspects(self.config, b.key) for b in batch]
        if self.aspect_sets is None:
            return [(label, aspects, None) for label, aspects in draws]
        from prefsmith.routing.routers import last_user_text

        routed = self.aspect_sets.route([last_user_text(b.item) for b in batch])
        return [
            (label, aspects, domain)
            for (label, _), (domain, aspects) in zip(draws, routed, strict=True)
        ]

    def process(self, batch: Sequence[RowItem], advance: Advance) -> list[Outcome]:
        settings = {k: v for k, v in self.settings().items() if k not in ("check",)}
        firsts = [g[0] for g in generate(self.model, [b.item for b in batch], self.sampling)]
        advance(len(batch) / 2)
        draws = self._draws(batch)
        keep = self.config.keep_truncated
        todo = [k for k, gen in enumerate(firsts) if pair_status(gen, None, keep) == "ok"]
        rewrites = [
            rewrite_messages(batch[k].item, firsts[k].text, *draws[k][:2], self.templates)
            for k in todo
        ]
        seconds = generate(self.model, rewrites, self.sampling) if rewrites else []
        second_of = {k: g[0] for k, g in zip(todo, seconds, strict=True)}
        pairs = {}
        for k in range(len(batch)):
            if pair_status(firsts[k], second_of.get(k), keep) == "ok":
                pairs[k] = order_pair(firsts[k].text, second_of[k].text, draws[k][0])
        checks = self._check(batch, pairs)
        outcomes = []
        for k, b in enumerate(batch):
            first, second = firsts[k], second_of.get(k)
            counts = {"tokens": first.n_tokens + (second.n_tokens if second else 0)}
            if k not in pairs:
                status = pair_status(first, second, keep)
                outcomes.append(Outcome(dropped=status, counts=counts))
                continue
            label, aspects, domain = draws[k]
            row = {
                **format_pair(b.item, *pairs[k], self.fmt),
                **carried_fields(dict(b.row)),
                "rmboost_label": label,
                "aspects": list(aspects),
                "finish_reasons": {"first": first.finish_reason, "second": second.finish_reason},
                "n_tokens": {"first": first.n_tokens, "second": second.n_tokens},
                "generated_with": settings,
            }
            if domain is not None:
                row["domain"] = domain
            if k in checks:
                row.update(checks[k])
                agrees = checks[k]["scorer_agrees"]
                counts.update({"checked": 1, f"checked {label}": 1})
                counts.update({"agrees": int(agrees), f"agrees {label}": int(agrees)})
                if self.filter_agreement and not agrees:
                    outcomes.append(Outcome(dropped="scorer disagrees", counts=counts))
                    continue
                if self.min_probability is not None and not (
                    checks[k]["p_chosen"] > self.min_probability
                ):
                    why = f"p_chosen not above {self.min_probability}"
                    outcomes.append(Outcome(dropped=why, counts=counts))
                    continue
            outcomes.append(Outcome([row], counts=counts))
        return outcomes

    def _check(
        self, batch: Sequence[RowItem], pairs: dict[int, tuple[str, str]]
    ) -> dict[int, dict[str, Any]]:
        """Rewards of the pairs on the original prompt, when a check reward is set."""
        if self.check is None or not pairs:
            return {}
        keys = sorted(pairs)
        items = [ScoringItem(batch[k].item, ("chosen", "rejected"), pairs[k], "pair") for k in keys]
        record = scored_with(self.check.settings())
        out = {}
        for k, scored in zip(keys, self.check.score_items(items), strict=True):
            chosen, rejected = (r.reward for r in scored.responses)
            out[k] = {
                "reward_chosen": chosen,
                "reward_rejected": rejected,
                "reward_margin": chosen - rejected,
                "scorer_agrees": chosen - rejected > 0,
                "scored_with": record,
            }
            if self.check.calibrated:
                out[k]["p_chosen"] = sigmoid(chosen - rejected)
        return out


def agreement(counts: dict[str, int]) -> dict[str, float | None]:
    """Share of checked pairs the scorer agrees with: overall and per label.

    >>> agreement({"checked": 4, "agrees": 3, "checked better": 2, "agrees better": 2})
    {'all': 0.75, 'better': 1.0, 'worse': None}
    """
    out: dict[str, float | None] = {}
    for key, suffix in (("all", ""), ("better", " better"), ("worse", " worse")):
        total = counts.get(f"checked{suffix}", 0)
        out[key] = counts.get(f"agrees{suffix}", 0) / total if total else None
    return out
