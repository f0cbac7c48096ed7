"""RMBoost: preference-conditional, multi-aspect synthetic pairs (``prefsmith rmboost``).

For each prompt (Shen et al., 2024; ``METHODS.md`` section 3):

1. sample a first response (seeded like sample 0 of ``prefsmith sample`` with the same
   settings);
2. draw the preference label with a seeded RNG: the new response must be ``better`` or
   ``worse`` than the first (:func:`draw_label_and_aspects`);
3. draw ``num_aspects`` quality aspects from the configured list;
4. ask the generator for a second response conditioned on the prompt, the first response, the
   label and the aspects (:func:`rewrite_messages`, wording in ``resources/rmboost/``);
5. order the pair by the label (:func:`order_pair`): ``better`` makes the second response the
   chosen one, ``worse`` the rejected one.

Rows whose first or second response is empty or truncated, or whose second response repeats
the first, give no pair (their reason is recorded). Optionally each pair is checked with the
density-ratio scorer on the original prompt: ``scorer_agrees`` is whether reward(chosen) >
reward(rejected) (a tie counts as disagreement, as in RewardBench), and ``filter_agreement``
keeps only agreeing pairs.

Files, for ``--output out.jsonl``:

* ``out.jsonl.generated.jsonl``: every row generated, with its status (resumable journal);
* ``out.jsonl.scores.jsonl``: the scorer's rewards of the pairs (with the check; resumable);
* ``out.jsonl``: the pairs in TRL format, rebuilt from the two above at the end of each run.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from prefsmith.data.io import INDEX_FIELD, JsonlAppender, Record, read_done_indices, read_jsonl_rows
from prefsmith.data.rows import RowError, ScoringItem
from prefsmith.generation.pairs import (
    PairFormat,
    carried_fields,
    format_pair,
    scores_path,
    write_rows,
)
from prefsmith.generation.sampling import (
    Generation,
    SamplingConfig,
    generate,
    generator_settings,
    read_prompts,
    split_too_long,
    write_rejected,
    write_settings,
)
from prefsmith.models.encoding import Message
from prefsmith.models.loading import LoadedModel
from prefsmith.rewards.annotate import (
    AnnotateOptions,
    ValidatedInput,
    annotate_file,
    progress_bar,
    short_hash,
)

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
        keep_truncated: Keep pairs where a response hit ``max_new_tokens``.
    """

    aspects: tuple[str, ...] = DEFAULT_ASPECTS
    num_aspects: int = 2
    p_better: float = 0.5
    seed: int = 0
    templates: str | None = None
    keep_truncated: bool = False

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


def parse_aspect_descriptions(text: str) -> dict[str, str]:
    """Parse ``name: description`` lines (``#`` comments and blank lines ignored).

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
            raise ValueError(f"aspects.txt:{line_no}: expected 'name: description'")
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
    found = set()
    for match in string.Template.pattern.finditer(text):
        name = match.group("named") or match.group("braced")
        if match.group("invalid") is not None:
            raise ValueError(f"{where}: a lone '$' (write $$ for a literal dollar sign)")
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            known = ", ".join("$" + p for p in PLACEHOLDERS)
            raise ValueError(f"{where}: unknown placeholder ${name} (known: {known})")
        found.add(name)
    missing = [p for p in PLACEHOLDERS if p not in found]
    if missing:
        raise ValueError(f"{where}: missing placeholder(s) {', '.join('$' + p for p in missing)}")


def load_templates(folder: str | Path | None = None) -> Templates:
    """Read and check the templates in ``folder`` (default: prefsmith's own)."""
    folder = Path(folder) if folder is not None else default_templates_dir()
    texts = {}
    for name in ("system", "better", "worse"):
        path = folder / f"{name}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"RMBoost template {path} does not exist")
        texts[name] = path.read_text(encoding="utf-8").strip()
    for name in ("better", "worse"):
        check_template(texts[name], str(folder / f"{name}.txt"))
    aspects_file = folder / "aspects.txt"
    descriptions = (
        parse_aspect_descriptions(aspects_file.read_text(encoding="utf-8"))
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
# Files


@dataclass(frozen=True)
class RMBoostFileOptions:
    """File-level options of :func:`rmboost_generate`.

    Attributes:
        chunk_size: Prompts generated (and written) together.
        limit: Use only the first ``limit`` prompts (``None``: all).
        max_prompt_tokens: Prompts longer than this are set aside (see
            :class:`~prefsmith.generation.sampling.SampleFileOptions`).
        on_error: ``raise`` or ``skip`` (bad rows to ``<output>.rejected.jsonl``).
        progress: Show a progress bar.
    """

    chunk_size: int = 16
    limit: int | None = None
    max_prompt_tokens: int | None = None
    on_error: Literal["raise", "skip"] = "raise"
    progress: bool = True


@dataclass(frozen=True)
class RMBoostSummary:
    """What an ``rmboost`` run did.

    Attributes:
        output: Final output path.
        prompts: Rows in the generation journal (this run and earlier ones).
        generated: Prompts generated in this run.
        pairs: Pairs written to the output.
        dropped: Rows without a pair, by reason.
        agreement: Fraction of pairs where the scorer agrees with the label (``None``
            without the check), overall and per label (``all``, ``better``, ``worse``).
        checked: Pairs checked by the scorer, per label.
        seconds: Wall time of generation in this run.
        tokens: Tokens generated in this run.
    """

    output: Path
    prompts: int
    generated: int
    pairs: int
    dropped: dict[str, int]
    agreement: dict[str, float | None]
    checked: dict[str, int]
    seconds: float
    tokens: int


def generated_path(output: str | Path) -> Path:
    """The resumable generation journal of an ``rmboost`` run."""
    output = Path(output)
    return output.with_name(output.name + ".generated.jsonl")


def rmboost_settings(
    loaded: LoadedModel, sampling: SamplingConfig, config: RMBoostConfig, templates: Templates
) -> dict[str, Any]:
    """Generator and RMBoost settings recorded with every row (``generated_with``)."""
    return {
        **generator_settings(loaded, replace(sampling, n=1)),
        "rmboost": {**asdict(config), "templates_hash": templates.fingerprint()},
    }


def rmboost_generate(
    source: str | Path,
    output_path: str | Path,
    loaded: LoadedModel,
    sampling: SamplingConfig,
    config: RMBoostConfig | None = None,
    options: RMBoostFileOptions | None = None,
) -> tuple[int, float, int]:
    """Generate first and second responses for every prompt into the generation journal.

    Resumable: prompts already in the journal are skipped. Returns ``(prompts generated,
    seconds, tokens)``.
    """
    config = config or RMBoostConfig()
    options = options or RMBoostFileOptions()
    sampling = replace(sampling, n=1)
    output_path = Path(output_path)
    templates = load_templates(config.templates)
    good, bad = read_prompts(source, sampling.system_prompt, options.on_error, options.limit)
    good, too_long = split_too_long(good, loaded, sampling, options.max_prompt_tokens)
    if too_long and options.on_error == "raise":
        raise RowError(too_long[0][1].location, too_long[0][1].reason)
    write_rejected(output_path, bad + too_long)
    journal = generated_path(output_path)
    done = read_done_indices(journal)
    pending = [(rec, conv) for rec, conv in good if rec.index not in done]
    settings = rmboost_settings(loaded, sampling, config, templates)
    write_settings(
        journal,
        {
            **settings,
            "template_text": loaded.tokenizer.chat_template,
            "rmboost_templates": asdict(templates),
        },
    )
    start = time.perf_counter()
    tokens = 0
    with (
        JsonlAppender(journal) as out,
        progress_bar(options.progress, 2 * len(pending), "rmboost", "responses/s") as advance,
    ):
        for first_index in range(0, len(pending), options.chunk_size):
            chunk = pending[first_index : first_index + options.chunk_size]
            firsts = [g[0] for g in generate(loaded, [c for _, c in chunk], sampling, advance)]
            draws = [draw_label_and_aspects(config, rec.index) for rec, _ in chunk]
            todo = [
                k
                for k, gen in enumerate(firsts)
                if pair_status(gen, None, config.keep_truncated) == "ok"
            ]
            advance(len(chunk) - len(todo))
            rewrites = [
                rewrite_messages(chunk[k][1], firsts[k].text, draws[k][0], draws[k][1], templates)
                for k in todo
            ]
            seconds_batch = generate(loaded, rewrites, sampling, advance) if rewrites else []
            seconds_by_row = {k: g[0] for k, g in zip(todo, seconds_batch, strict=True)}
            rows = []
            for k, (rec, conv) in enumerate(chunk):
                second = seconds_by_row.get(k)
                tokens += firsts[k].n_tokens + (second.n_tokens if second else 0)
                rows.append(journal_row(rec, conv, firsts[k], second, draws[k], config, settings))
            out.write(rows)
            out.flush()
    return len(pending), time.perf_counter() - start, tokens


def journal_row(
    record: Record,
    context: Sequence[Message],
    first: Generation,
    second: Generation | None,
    draw: tuple[Label, tuple[str, ...]],
    config: RMBoostConfig,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """One generation journal row (format-neutral; the output is built from it)."""
    label, aspects = draw
    return {
        **carried_fields(record.value),
        INDEX_FIELD: record.index,
        "context": [dict(m) for m in context],
        "first_response": first.text,
        "second_response": second.text if second else None,
        "rmboost_label": label,
        "aspects": list(aspects),
        "finish_reasons": {
            "first": first.finish_reason,
            "second": second.finish_reason if second else None,
        },
        "n_tokens": {"first": first.n_tokens, "second": second.n_tokens if second else None},
        "status": pair_status(first, second, config.keep_truncated),
        "generated_with": settings,
    }


def _pair_of(row: dict[str, Any]) -> tuple[str, str]:
    return order_pair(row["first_response"], row["second_response"], row["rmboost_label"])


def rmboost_check(output_path: str | Path, scorer: Any, progress: bool = True) -> Path:
    """Score every ``ok`` pair of the journal into ``<output>.scores.jsonl`` (resumable)."""
    output_path = Path(output_path)
    good = []
    for row in read_jsonl_rows(generated_path(output_path)):
        if row["status"] != "ok":
            continue
        chosen, rejected = _pair_of(row)
        value = {
            "prompt": row["context"],
            "chosen": chosen,
            "rejected": rejected,
            "rmboost_label": row["rmboost_label"],
        }
        item = ScoringItem(
            tuple(row["context"]), ("chosen", "rejected"), (chosen, rejected), "pair"
        )
        location = f"{generated_path(output_path)}[{row[INDEX_FIELD]}]"
        good.append((Record(row[INDEX_FIELD], location, value), item))
    path = scores_path(output_path)
    annotate_file(ValidatedInput(good, []), path, scorer, AnnotateOptions(progress=progress))
    return path


def rmboost_finalize(
    output_path: str | Path,
    fmt: PairFormat = "conversational",
    checked: bool = False,
    filter_agreement: bool = False,
) -> tuple[int, dict[str, int], dict[str, float | None], dict[str, int]]:
    """Write the output pairs from the journal (and the scores, with ``checked``).

    Returns ``(pairs written, dropped by reason, agreement by label, checked by label)``.
    """
    output_path = Path(output_path)
    journal = sorted(read_jsonl_rows(generated_path(output_path)), key=lambda r: r[INDEX_FIELD])
    scores = (
        {r[INDEX_FIELD]: r for r in read_jsonl_rows(scores_path(output_path))} if checked else {}
    )
    if filter_agreement and not checked:
        raise ValueError("filtering on agreement needs the density-ratio check (--check)")
    rows, dropped = [], {}
    agree = {"all": 0, "better": 0, "worse": 0}
    total = {"all": 0, "better": 0, "worse": 0}
    for row in journal:
        if row["status"] != "ok":
            dropped[row["status"]] = dropped.get(row["status"], 0) + 1
            continue
        chosen, rejected = _pair_of(row)
        out = {
            **format_pair(row["context"], chosen, rejected, fmt),
            **{k: v for k, v in row.items() if k not in _JOURNAL_ONLY},
        }
        if checked:
            scored = scores.get(row[INDEX_FIELD])
            if scored is None or (scored["chosen"], scored["rejected"]) != (chosen, rejected):
                raise ValueError(
                    f"{scores_path(output_path)} does not match {generated_path(output_path)}"
                    f" at row {row[INDEX_FIELD]}; delete the scores file to check again"
                )
            margin = scored["reward_margin"]
            agrees = margin > 0
            for key in ("all", row["rmboost_label"]):
                total[key] += 1
                agree[key] += agrees
            out.update(
                reward_chosen=scored["reward_chosen"],
                reward_rejected=scored["reward_rejected"],
                reward_margin=margin,
                scorer_agrees=agrees,
                scored_with=scored["scored_with"],
            )
            if filter_agreement and not agrees:
                dropped["scorer disagrees"] = dropped.get("scorer disagrees", 0) + 1
                continue
        rows.append(out)
    write_rows(output_path, rows)
    agreement = {k: (agree[k] / total[k] if total[k] else None) for k in total}
    if not checked:
        agreement = {k: None for k in total}
    return len(rows), dropped, agreement, total


#: Journal fields not copied to output rows (the pair itself replaces them).
_JOURNAL_ONLY = ("context", "status", "first_response", "second_response")


def rmboost_file(
    source: str | Path,
    output_path: str | Path,
    loaded: LoadedModel,
    sampling: SamplingConfig,
    config: RMBoostConfig | None = None,
    options: RMBoostFileOptions | None = None,
    fmt: PairFormat = "conversational",
    scorer: Any = None,
    filter_agreement: bool = False,
) -> RMBoostSummary:
    """Generate, optionally check with ``scorer``, and write RMBoost pairs (all stages)."""
    options = options or RMBoostFileOptions()
    generated, seconds, tokens = rmboost_generate(
        source, output_path, loaded, sampling, config, options
    )
    if scorer is not None:
        rmboost_check(output_path, scorer, options.progress)
    return summarize(
        output_path, generated, seconds, tokens, fmt, scorer is not None, filter_agreement
    )


def summarize(
    output_path: str | Path,
    generated: int,
    seconds: float,
    tokens: int,
    fmt: PairFormat,
    checked: bool,
    filter_agreement: bool,
) -> RMBoostSummary:
    """Write the output (:func:`rmboost_finalize`) and describe the run."""
    pairs, dropped, agreement, total = rmboost_finalize(output_path, fmt, checked, filter_agreement)
    prompts = len(read_jsonl_rows(generated_path(output_path)))
    return RMBoostSummary(
        Path(output_path), prompts, generated, pairs, dropped, agreement, total, seconds, tokens
    )
