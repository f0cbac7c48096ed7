"""Any reward as a reward model, RewardBench-style (``prefsmith eval``).

:func:`evaluate` turns scored pairs (rows with ``reward_margin`` and ``subset``) into per-subset
and per-section accuracy. :func:`evaluate_file` scores a pair file with several rewards through
the row runner (one resumable scores file per scorer, models shared, log-probs cached) and
evaluates each.

Input columns: ``prompt``, ``chosen``, ``rejected`` (any pair shape of
:mod:`prefsmith.data.rows`), ``subset`` (rows without it count under ``all``), ``id``
(optional; the row position is used when absent). The official RewardBench ``filtered`` split
saved as JSON/JSONL/Parquet has these columns and runs unchanged. K-wise rows (``chosen`` and
``rejected`` as lists of completions: RewardBench 2, RM-Bench) are scored each completion once
and evaluated as their benchmark does (:mod:`prefsmith.evaluation.kwise`); a file holds pairs
or K-wise rows, not both.

Outputs (in the output folder): ``scores/<scorer>.jsonl`` (the scored rows of each scorer),
``rows.jsonl`` (one row per pair with every scorer's margin under ``margins``),
``results.json`` (per scorer: per-subset and per-section accuracy, overall, per-pair margins;
settings, model fingerprints, timings), ``report.md``, ``accuracy_by_section.png`` and
``margins.png``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefsmith.data.io import INDEX_FIELD, JsonlAppender, read_jsonl_rows
from prefsmith.data.rows import PAIR_COLUMNS, ScoringItem, to_scoring_item
from prefsmith.data.runner import ReadInput, RunOptions, run_rows
from prefsmith.evaluation.kwise import evaluate_kwise
from prefsmith.evaluation.plots import plot_margins, plot_sections
from prefsmith.evaluation.results import EvalResult, ScorerResult
from prefsmith.evaluation.routing import confusion_matrix, routing_agreement
from prefsmith.evaluation.sections import (
    SECTION_ORDER,
    SubsetResult,
    section_of,
    section_scores,
    subset_results,
)
from prefsmith.models.cache import CachedBackend
from prefsmith.rewards.base import Reward, ScoreStep


def pair_id(row: Mapping[str, Any]) -> str:
    """Stable id of a scored pair: its ``id`` field, else its position in the input."""
    return str(row.get("id", row.get(INDEX_FIELD)))


def row_ids(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each row's :func:`pair_id` (its position when it has neither), made unique: a repeated
    id gets ``#POSITION`` (RM-Bench's per-domain files reuse ids across domains).

    >>> row_ids([{"id": 8}, {"id": 9}, {"id": 8}, {}])
    ['8#0', '9', '8#2', '3']
    """
    ids = [pair_id(r) if "id" in r or INDEX_FIELD in r else str(k) for k, r in enumerate(rows)]
    seen: dict[str, int] = {}
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
    return [i if seen[i] == 1 else f"{i}#{k}" for k, i in enumerate(ids)]


def evaluate(rows: Iterable[Mapping[str, Any]], scorer: str = "reward") -> ScorerResult:
    """RewardBench-style accuracy of scored pairs.

    Scored K-wise rows (with ``rewards_chosen``) are evaluated by
    :func:`~prefsmith.evaluation.kwise.evaluate_kwise` instead.

    A pair is correct when its ``reward_margin`` is above 0 (ties are wrong); rows without a
    ``subset`` count under ``all``. Sections are count-weighted means of their subsets
    (Reasoning: math and code half and half); ``Overall`` is the mean of the sections present.

    >>> rows = [{"id": "a", "subset": "hep-go", "reward_margin": 1.0},
    ...         {"id": "b", "subset": "llmbar-natural", "reward_margin": -0.5}]
    >>> result = evaluate(rows, "my-scorer")
    >>> result.sections
    {'Chat Hard': 0.0, 'Reasoning': 1.0, 'Overall': 0.5}
    """
    rows = list(rows)
    ids = row_ids(rows)
    kwise = sum("rewards_chosen" in r for r in rows)
    if kwise:
        if kwise != len(rows):
            raise ValueError("a file holds chosen/rejected pairs or K-wise rows, not both")
        return evaluate_kwise(rows, ids, scorer)
    margins = {i: float(r["reward_margin"]) for i, r in zip(ids, rows, strict=True)}
    subsets = [str(r.get("subset", "all")) for r in rows]
    results = subset_results(zip(subsets, margins.values(), strict=True))
    return ScorerResult(
        scorer=scorer,
        subsets={s: _subset_json(r) for s, r in sorted(results.items())},
        sections=section_scores(results),
        margins=margins,
    )


def _subset_json(result: SubsetResult) -> dict[str, Any]:
    return {
        "correct": result.correct,
        "total": result.total,
        "accuracy": result.accuracy,
        "section": section_of(result.subset),
    }


def prepare_pair(row: Mapping[str, Any], system_prompt: str | None = None) -> ScoringItem:
    """Validate a chosen/rejected pair row or a K-wise row (what ``eval`` reads).

    >>> prepare_pair({"prompt": "hi", "chosen": ["a"], "rejected": ["b", "c"]}).kind
    'kwise'
    >>> prepare_pair({"prompt": "hi", "responses": ["a", "b"]})
    Traceback (most recent call last):
    ...
    ValueError: eval needs chosen/rejected pairs or lists, not candidate lists
    """
    item = to_scoring_item(row, system_prompt)
    if item.kind == "candidates":
        raise ValueError("eval needs chosen/rejected pairs or lists, not candidate lists")
    return item


class PairScoreStep(ScoreStep):
    """The ``score`` step restricted to chosen/rejected pairs."""

    name = "eval"
    input_columns = "prompt + chosen/rejected, strings or lists (+ subset, id)"
    required_columns = PAIR_COLUMNS

    def prepare(self, row: Mapping[str, Any]) -> ScoringItem:
        return prepare_pair(row, self.system_prompt)


def scorer_slug(name: str) -> str:
    """A file name for a scorer spec.

    >>> scorer_slug("density-ratio:org/a,b:sum+cdr")
    'density-ratio_org-a_b_sum+cdr'
    """
    return re.sub(r"[^A-Za-z0-9+.-]+", "_", name.replace("/", "-"))


def evaluate_file(
    data: str | Path | ReadInput,
    rewards: Sequence[Reward],
    output_dir: str | Path,
    options: RunOptions | None = None,
    system_prompt: str | None = None,
    save_token_logprobs: bool = False,
) -> EvalResult:
    """Score ``data`` with every reward and evaluate each; write the outputs to ``output_dir``.

    Scoring runs through :func:`~prefsmith.data.runner.run_rows` into
    ``output_dir/scores/<scorer>.jsonl``, so an interrupted evaluation resumes. Rewards built
    on one :class:`~prefsmith.models.pool.ModelPool` share loaded models and the log-prob cache.

    >>> import json, tempfile, pathlib
    >>> from prefsmith.data.runner import RunOptions
    >>> from prefsmith.rewards.density_ratio import DensityRatioReward
    >>> from prefsmith.testing import tiny_backend
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> pairs = [{"id": "x", "subset": "hep-go", "prompt": "2+2?", "chosen": "4", "rejected": "5"}]
    >>> _ = (folder / "pairs.jsonl").write_text(json.dumps(pairs[0]) + "\\n")
    >>> reward = DensityRatioReward(tiny_backend(seed=0), tiny_backend(seed=1))
    >>> result = evaluate_file(folder / "pairs.jsonl", [reward], folder / "eval",
    ...                        RunOptions(progress=False))
    >>> result.pairs, sorted(result.scorers[0].sections)
    (1, ['Overall', 'Reasoning'])
    """
    if not rewards:
        raise ValueError("give at least one scorer")
    out = Path(output_dir)
    result = EvalResult(str(data), 0, {"scorers": [r.name for r in rewards]}, {}, {})
    result.settings["system_prompt"] = system_prompt
    scored: dict[str, list[dict[str, Any]]] = {}
    for k, reward in enumerate(rewards, start=1):
        path = out / "scores" / f"{scorer_slug(reward.name)}.jsonl"
        step = PairScoreStep(reward, system_prompt, save_token_logprobs)
        if len(rewards) > 1:  # say which scorer the progress is about: #k as in the tables
            step.progress_label = f"eval #{k}/{len(rewards)}"
        summary = run_rows(data, path, step, options)
        result.timings[reward.name] = summary.seconds
        scored[reward.name] = read_jsonl_rows(path)
        result.scorers.append(evaluate(scored[reward.name], reward.name))
        result.models.update(_model_info(reward))
    first = next(iter(scored.values()))
    result.pairs = len(first)
    customized = [r for r in rewards if r.customization is not None]
    if customized:
        result.routing = routing_summary(scored[customized[0].name], customized[0])
    write_outputs(result, out, pair_rows(scored))
    return result


def routing_summary(rows: Sequence[Mapping[str, Any]], reward: Reward) -> dict[str, Any]:
    """Router settings, domain per pair, confusion matrix against the RewardBench sections."""
    assert reward.customization is not None
    domains = [str(r["domain"]) for r in rows]
    subsets = [str(r.get("subset", "all")) for r in rows]
    return {
        **reward.customization.settings(),
        "pairs": {
            pair_id(r): {"domain": r["domain"], "router_confidence": r["router_confidence"]}
            for r in rows
        },
        "confusion": confusion_matrix(domains, [section_of(s) for s in subsets]),
        "agreement_with_sections": routing_agreement(domains, subsets),
    }


def pair_rows(scored: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per pair: the first scorer's row with every scorer's margin under ``margins``."""
    names = list(scored)
    base = scored[names[0]]
    out = []
    for k, row in enumerate(base):
        merged = dict(row)
        merged["margins"] = {name: scored[name][k]["reward_margin"] for name in names}
        out.append(merged)
    return out


def _model_info(reward: Reward) -> dict[str, dict[str, Any]]:
    info = {}
    for role in ("strong", "weak"):
        backend = getattr(reward, role, None)
        if backend is None:
            continue
        entry: dict[str, Any] = {
            "name": backend.name,
            "fingerprint": backend.fingerprint,
            "dtype": backend.dtype,
            "template_sha256": hashlib.sha256(backend.template.encode()).hexdigest(),
        }
        if isinstance(backend, CachedBackend):
            entry["computed"] = backend.computed
            entry["cache_hits"] = backend.hits
        info[backend.name] = entry
    return info


def write_outputs(
    result: EvalResult, out_dir: str | Path, rows: Sequence[dict[str, Any]] = ()
) -> list[Path]:
    """Write ``results.json``, ``report.md``, ``rows.jsonl`` and the PNG plots; return paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "report.md"]
    paths[0].write_text(json.dumps(result.to_json(), indent=2))
    paths[1].write_text(markdown_report(result))
    if rows:
        rows_path = out / "rows.jsonl"
        rows_path.unlink(missing_ok=True)
        with JsonlAppender(rows_path) as writer:
            writer.write(rows)
        paths.append(rows_path)
    paths.append(plot_sections(result, out / "accuracy_by_section.png"))
    paths.append(plot_margins(result, out / "margins.png"))
    return paths


def markdown_report(result: EvalResult) -> str:
    """A Markdown report: settings, section table, subset table."""
    names = [s.scorer for s in result.scorers]
    lines = [
        f"# Reward-model evaluation of `{result.data}`",
        "",
        f"{result.pairs} {_unit(result)}. Models: "
        + ", ".join(f"`{name}` ({m['dtype']})" for name, m in result.models.items())
        + ".",
        "",
        "| section | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for section in SECTION_ORDER:
        if any(section in s.sections for s in result.scorers):
            cells = [_pct(s.sections.get(section)) for s in result.scorers]
            lines.append(f"| {section} | " + " | ".join(cells) + " |")
    lines += ["", f"| subset | section | {_unit(result)} | " + " | ".join(names) + " |"]
    lines.append("|---|---|---:|" + "---:|" * len(names))
    for subset, info in result.scorers[0].subsets.items():
        cells = [_pct(s.subsets[subset]["accuracy"]) for s in result.scorers]
        section = info["section"] or "(unknown)"
        lines.append(f"| {subset} | {section} | {info['total']} | " + " | ".join(cells) + " |")
    lines += benchmark_lines(result)
    if result.routing is not None:
        confusion = result.routing["confusion"]
        domains = sorted({d for row in confusion.values() for d in row})
        lines += ["", f"Router `{result.routing['router']}` (section x routed domain):", ""]
        lines += ["| section | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
        for section, row in confusion.items():
            counts = " | ".join(str(row.get(d, 0)) for d in domains)
            lines.append(f"| {section} | {counts} |")
    if result.fit is not None:
        lines += ["", *fit_lines(result.fit)]
    timings = json.dumps({k: round(v, 2) for k, v in result.timings.items()})
    lines += ["", f"Timings (s): {timings}"]
    return "\n".join(lines) + "\n"


def benchmark_lines(result: EvalResult) -> list[str]:
    """Markdown of K-wise benchmarks: RM-Bench's style matrix per scorer and domain, and
    RewardBench 2's Ties terms.

    >>> from prefsmith.evaluation.kwise import evaluate_kwise
    >>> rows = [{"domain": "chat", "rewards_chosen": [1.0, 2.0, 3.0],
    ...          "rewards_rejected": [0.5, 2.5, 3.0]}]
    >>> result = EvalResult("x", 1, {}, {}, {}, [evaluate_kwise(rows, ["0"], "s")])
    >>> print("\\n".join(benchmark_lines(result)[3:8]))
    | chosen \\ rejected | concise | detailed | detailed + markdown |
    |---|---:|---:|---:|
    | concise | 100.0 | 0.0 | 0.0 |
    | detailed | 100.0 | 0.0 | 0.0 |
    | detailed + markdown | 100.0 | 100.0 | 0.0 |
    """
    lines: list[str] = []
    for s in result.scorers:
        bench = s.benchmark or {}
        if bench.get("kind") == "rmbench":
            styles = bench["styles"]
            for domain, d in bench["domains"].items():
                levels = ", ".join(f"{k} {_pct(d[k])}" for k in ("hard", "normal", "easy"))
                lines += [
                    "",
                    f"RM-Bench `{domain}` ({d['prompts']} prompts), `{s.scorer}`: {levels}",
                ]
                lines += ["", "| chosen \\ rejected | " + " | ".join(styles) + " |"]
                lines.append("|---|" + "---:|" * len(styles))
                for style, line in zip(styles, d["matrix"], strict=True):
                    lines.append(f"| {style} | " + " | ".join(_pct(v) for v in line) + " |")
        if bench.get("kind") == "rewardbench2" and bench.get("ties"):
            ties = bench["ties"]
            terms = ", ".join(
                f"{k} {_pct(ties[k])}"
                for k in ("tied_accuracy", "ref_accuracy", "correctness_preferred")
            )
            lines += [
                "",
                f"Ties, `{s.scorer}`: {terms}, hard {_pct(ties['correctness_preferred_hard'])}",
            ]
    return lines


def fit_lines(fit: Mapping[str, Any]) -> list[str]:
    """Markdown of ``eval --fit``: differences from the baseline, held-out calibration."""
    lines = [
        f"Fits ({fit['folds']}-fold cross-validation, seed {fit['seed']}; `cv:` columns are"
        f" held-out scores). Against `{fit['baseline']}` (paired bootstrap 95 % interval of the"
        " overall difference, pairs resampled within subsets; two-sided sign test):",
        "",
        "| scorer | diff (points) | 95 % CI | wins / losses | sign p |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, c in fit["comparisons"].items():
        b, s = c["bootstrap"], c["sign"]
        lines.append(
            f"| `{name}` | {100 * b['difference']:+.1f} | [{100 * b['low']:+.1f},"
            f" {100 * b['high']:+.1f}] | {s['wins']} / {s['losses']} | {s['p']:.3f} |"
        )
    lines += ["", "| fit | held-out ECE | held-out log loss | fitted on all rows |"]
    lines.append("|---|---:|---:|---|")
    models = {m["name"]: m for m in fit["models"]}
    for name, c in fit["calibration"].items():
        extra = {k: v for k, v in models[name]["extra"].items() if k != "standardized_weights"}
        shown = ", ".join(f"{k} = {v:.4g}" for k, v in extra.items() if isinstance(v, float))
        lines.append(f"| `{name}` | {c['ece']:.3f} | {c['nll']:.3f} | {shown} |")
    return lines


def _unit(result: EvalResult) -> str:
    """What a row is: ``prompts`` for K-wise rows, else ``pairs``."""
    return "prompts" if any(s.benchmark for s in result.scorers) else "pairs"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"
