"""The data a report page embeds, built from rows, settings and eval results (no I/O).

:func:`report_data` turns any prefsmith output into one JSON-serializable dict: display
settings, the eval tables and plots, and one compact entry per row (prompt, responses, rewards,
margins, flags and, where token log-probs were saved, each token's text with its strong and
weak log-probs). Token values travel as base64 float32 pairs ``(strong, weak)``; the page
decodes a row's tokens only when the row is opened.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from prefsmith.report.tokens import token_view

#: Version of the embedded data layout.
DATA_FORMAT = 1

SECTION_ORDER = ("Chat", "Chat Hard", "Safety", "Reasoning", "Overall")
#: Row fields that are shown as filterable groups, in this order.
GROUP_FIELDS = ("subset", "domain", "goal", "rmboost_label", "section")
#: Row fields shown elsewhere on the page (never repeated under "other fields").
SHOWN_FIELDS = {
    "id",
    "prompt",
    "messages",
    "context",
    "chosen",
    "rejected",
    "responses",
    "reward_chosen",
    "reward_rejected",
    "reward_margin",
    "rewards",
    "rewards_chosen",
    "rewards_rejected",
    "margins",
    "scored_with",
    "token_logprobs",
    "response_tokens",
    "truncated",
    *GROUP_FIELDS,
}
_LONG = 300


def report_data(
    rows: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any] | None = None,
    eval_results: Mapping[str, Any] | None = None,
    *,
    source: str = "",
    plots: Mapping[str, bytes] | None = None,
    total_rows: int | None = None,
) -> dict[str, Any]:
    """Everything the page shows, as one JSON-serializable dict.

    ``rows``: scored rows (score, pairs, rmboost, relabel outputs, or an eval's pairs);
    ``settings``: side-file settings by name (e.g. ``{"settings.json": {...}}``);
    ``eval_results``: an eval's ``results.json``; ``plots``: PNG bytes by title;
    ``total_rows``: rows in the source when ``rows`` is a prefix of them.

    >>> row = {"id": "a", "prompt": "2+2?", "chosen": "4", "rejected": "5",
    ...        "reward_chosen": 1.5, "reward_rejected": -0.5, "reward_margin": 2.0}
    >>> data = report_data([row])
    >>> data["kind"], data["rows"][0]["m"], [r["n"] for r in data["rows"][0]["r"]]
    ('pairs', 2.0, ['chosen', 'rejected'])
    """
    settings = dict(settings or {})
    scorers = [s["scorer"] for s in eval_results.get("scorers", [])] if eval_results else []
    reduction, shared = _reduction_and_sharing(rows, settings, eval_results)
    out_rows = [_row(i, row, reduction, shared, scorers) for i, row in enumerate(rows)]
    kind = _kind(rows, eval_results)
    if eval_results:  # the RewardBench section of each pair, for filtering
        sections = {
            name: info.get("section")
            for scorer in eval_results.get("scorers") or []
            for name, info in (scorer.get("subsets") or {}).items()
            if info.get("section")
        }
        for out in out_rows:
            subset = out["g"].get("subset")
            if subset in sections and "section" not in out["g"]:
                out["g"]["section"] = str(sections[subset])
    groups = [g for g in GROUP_FIELDS if any(g in r["g"] for r in out_rows)]
    notes = _notes(out_rows, reduction, shared)
    return {
        "format": DATA_FORMAT,
        "title": f"prefsmith report: {source}" if source else "prefsmith report",
        "source": source,
        "kind": kind,
        "kwise": any(_kwise(row) is not None for row in rows),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": _settings_sections(rows, settings, eval_results),
        "notes": notes,
        "eval": _eval_tables(eval_results, plots) if eval_results else None,
        "scorers": scorers,
        "groups": groups,
        "reduction": reduction,
        "tokens": any("v" in r for row in out_rows for r in row["r"]),
        "total_rows": total_rows if total_rows is not None else len(rows),
        "rows": out_rows,
    }


def _kind(rows: Sequence[Mapping[str, Any]], eval_results: Mapping[str, Any] | None) -> str:
    if eval_results:
        return "eval"
    if rows and all("responses" in r and "chosen" not in r for r in rows):
        return "candidates"
    return "pairs"


def _reduction_and_sharing(
    rows: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    eval_results: Mapping[str, Any] | None,
) -> tuple[str, bool | None]:
    reduction, shared = None, None
    for row in rows[:1]:
        scored_with = row.get("scored_with") or {}
        reduction = scored_with.get("reduction")
        shared = scored_with.get("shared_tokenizer")
    for value in settings.values():
        if isinstance(value, Mapping):
            inner = value.get("scorer") if isinstance(value.get("scorer"), Mapping) else value
            reduction = reduction or inner.get("reduction")
            if shared is None and isinstance(inner.get("shared_tokenizer"), bool):
                shared = inner["shared_tokenizer"]
    if eval_results and shared is None:
        shared = (eval_results.get("settings") or {}).get("shared_tokenizer")
    return str(reduction or "sum"), shared


# ---------------------------------------------------------------- rows


def _text(value: Any) -> str:
    """A response as text: a string, a message, or the last message of a list."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return str(value.get("content", ""))
    if isinstance(value, Sequence) and value:
        assistant = [m for m in value if isinstance(m, Mapping) and m.get("role") == "assistant"]
        return _text(assistant[-1] if assistant else value[-1])
    return str(value)


def _messages(value: Any) -> list[list[str]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [["user", value]]
    if isinstance(value, Mapping):
        return [[str(value.get("role", "user")), str(value.get("content", ""))]]
    if isinstance(value, Sequence):
        out = []
        for m in value:
            if isinstance(m, Mapping):
                out.append([str(m.get("role", "?")), str(m.get("content", ""))])
            else:
                out.append(["user", str(m)])
        return out
    return [["user", str(value)]]


def _prompt(row: Mapping[str, Any]) -> list[list[str]]:
    for field in ("prompt", "messages", "context"):
        if row.get(field) is not None:
            return _messages(row[field])
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if isinstance(chosen, list) and isinstance(rejected, list):  # implicit prompt
        shared = []
        for a, b in zip(chosen, rejected, strict=False):
            if a != b:
                break
            shared.append(a)
        return _messages(shared)
    return []


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _kwise(row: Mapping[str, Any]) -> list[tuple[str, str, float | None]] | None:
    """A K-wise row's completions ranked by reward, best first (unscored ones last, in order);
    ``None`` for other rows.

    >>> row = {"chosen": ["a", "b"], "rejected": ["c"], "rewards_chosen": [0.5, 2.0],
    ...        "rewards_rejected": [1.0]}
    >>> [name for name, _, _ in _kwise(row)]
    ['chosen[1]', 'rejected[0]', 'chosen[0]']
    """
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not isinstance(chosen, list) or not isinstance(rejected, list):
        return None
    if not any(isinstance(x, str) for x in [*chosen, *rejected]):
        return None  # conversational pairs: lists of messages
    out = []
    for side, texts in (("chosen", chosen), ("rejected", rejected)):
        rewards = row.get(f"rewards_{side}") or []
        for i, text in enumerate(texts):
            reward = _float(rewards[i]) if i < len(rewards) else None
            out.append((f"{side}[{i}]", _text(text), reward))
    return sorted(out, key=lambda r: (r[2] is None, -(r[2] or 0.0)))


def _responses(row: Mapping[str, Any]) -> list[tuple[str, str, float | None]]:
    """``(name, text, reward)`` of each response of the row (K-wise rows: ranked by reward)."""
    ranked = _kwise(row)
    if ranked is not None:
        return ranked
    if "chosen" in row or "rejected" in row:
        out = []
        for name in ("chosen", "rejected"):
            if name in row:
                reward = _float(row.get(f"reward_{name}"))
                if reward is None and name == "chosen" and "reward" in row:
                    reward = _float(row.get("reward"))
                out.append((name, _text(row[name]), reward))
        return out
    responses = row.get("responses") or []
    if not isinstance(responses, list):
        responses = [responses]
    rewards = row.get("rewards") or []
    return [
        (str(i), _text(resp), _float(rewards[i]) if i < len(rewards) else None)
        for i, resp in enumerate(responses)
    ]


def _margin(row: Mapping[str, Any], responses: Sequence[tuple[str, str, float | None]]) -> Any:
    margin = _float(row.get("reward_margin"))
    if margin is not None:
        return margin
    rewards = {name: r for name, _, r in responses if r is not None}
    if "chosen" in rewards and "rejected" in rewards:
        return rewards["chosen"] - rewards["rejected"]
    if len(rewards) >= 2 and "chosen" not in rewards:  # candidates: spread of the rewards
        return max(rewards.values()) - min(rewards.values())
    return None


def _divisor(reduction: str, text: str, n_tokens: int) -> int:
    if reduction == "mean":
        return max(n_tokens, 1)
    if reduction == "mean-char":
        return max(len(text), 1)
    return 1


def _row(
    index: int,
    row: Mapping[str, Any],
    reduction: str,
    shared: bool | None,
    scorers: Sequence[str],
) -> dict[str, Any]:
    responses = _responses(row)
    truncated = row.get("truncated") if isinstance(row.get("truncated"), Mapping) else {}
    token_logprobs = row.get("token_logprobs") or {}
    counts = row.get("response_tokens") or {}
    out_responses = []
    kwise = _kwise(row) is not None
    for rank, (name, text, reward) in enumerate(responses, start=1):
        entry: dict[str, Any] = {"n": name, "rw": reward, "tr": truncated.get(name)}
        if kwise:  # correct or not, and the rank by reward
            entry["c"] = name.startswith("chosen[")
            entry["rk"] = rank if reward is not None else None
        if isinstance(counts.get(name), list | tuple):
            entry["nt"] = list(counts[name])
        detail = token_logprobs.get(name) if isinstance(token_logprobs, Mapping) else None
        view = token_view(detail, shared or None) if isinstance(detail, Mapping) else None
        if view is None:
            entry["x"] = text
        else:
            pairs = np.empty(2 * len(view.strong), dtype="<f4")
            pairs[0::2], pairs[1::2] = view.strong, view.weak
            entry["t"] = view.pieces
            entry["v"] = base64.b64encode(pairs.tobytes()).decode("ascii")
            entry["sum"] = _float(view.total)  # None when a log-prob was -inf or NaN
            entry["div"] = _divisor(reduction, text, len(view.strong))
            entry["sh"] = view.shared
            if view.note:
                entry["note"] = view.note
            if view.decoded_raw:
                entry["raw"] = True
        out_responses.append(entry)
    groups = {
        g: str(row[g])
        for g in GROUP_FIELDS
        if row.get(g) is not None and not isinstance(row[g], dict | list)
    }
    out: dict[str, Any] = {
        "i": index,
        "id": str(row.get("id", index)),
        "g": groups,
        "m": _margin(row, responses),
        "tr": any(v for v in truncated.values()),
        "p": _prompt(row),
        "r": out_responses,
    }
    margins = row.get("margins")
    if isinstance(margins, Mapping):
        out["ms"] = {str(k): _float(v) for k, v in margins.items()}
        if out["m"] is None and scorers and scorers[0] in out["ms"]:
            out["m"] = out["ms"][scorers[0]]
    extra = [[k, _short(v)] for k, v in row.items() if k not in SHOWN_FIELDS and v is not None]
    if extra:
        out["f"] = extra
    return out


def _notes(rows: Sequence[Mapping[str, Any]], reduction: str, shared: bool | None) -> list[str]:
    notes = []
    with_tokens = [r for row in rows for r in row["r"] if "v" in r]
    if with_tokens:
        if any(not r["sh"] for r in with_tokens):
            notes.append(
                "Strong and weak models have different tokenizers: tokens are the strong"
                " model's, and each token's weak log-prob is the weak model's log-prob mass"
                " over the same characters (each weak token's log-prob spread evenly over its"
                " characters, then summed over the strong token's span)."
            )
        else:
            notes.append("Strong and weak models share a tokenizer: contribution = strong − weak.")
        divisor = {"mean": "the number of response tokens", "mean-char": "the number of characters"}
        if reduction in divisor:
            notes.append(
                f"Reduction {reduction}: reward = Σ contributions ÷ {divisor[reduction]}"
                " (the divisor is shown with each response); token colours show the"
                " undivided per-token contributions in nats."
            )
        if any(r.get("raw") for r in with_tokens):
            notes.append(
                "This file holds raw tokenizer pieces (Ġ, Ċ, ▁); they are shown as the text"
                " they stand for."
            )
    else:
        notes.append("No per-token log-probs in this file (score with --save-token-logprobs).")
    if any(row["tr"] for row in rows):
        n = sum(1 for row in rows if row["tr"])
        rows_word = "row needs" if n == 1 else "rows need"
        notes.append(f"{n} {rows_word} truncation to fit the maximum length (filter: truncation).")
    return notes


# ---------------------------------------------------------------- settings


def _short(value: Any, key: str = "") -> str:
    if isinstance(value, str):
        if "template" in key.lower() and len(value) > 40:
            digest = hashlib.sha256(value.encode()).hexdigest()[:12]
            return f"sha256:{digest} ({len(value)} characters)"
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _LONG else text[:_LONG] + "…"


def _flatten(value: Any, prefix: str = "") -> list[list[str]]:
    if isinstance(value, Mapping):
        out = []
        for k, v in value.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, Mapping) and v and len(key.split(".")) < 3:
                out += _flatten(v, key)
            else:
                out.append([key, _short(v, key)])
        return out
    return [[prefix or "value", _short(value, prefix)]]


def _settings_sections(
    rows: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    eval_results: Mapping[str, Any] | None,
) -> list[list[Any]]:
    sections: list[list[Any]] = []
    if eval_results:
        run = {k: eval_results.get(k) for k in ("data", "pairs") if k in eval_results}
        run.update(eval_results.get("settings") or {})
        sections.append(["evaluation", _flatten(run)])
        for role, info in (eval_results.get("models") or {}).items():
            info = dict(info)
            if "template_sha256" in info:
                info["template_sha256"] = str(info["template_sha256"])[:12]
            sections.append([f"{role} model", _flatten(info)])
        if eval_results.get("timings"):
            timings = {k: round(v, 2) for k, v in eval_results["timings"].items()}
            sections.append(["timings (s)", _flatten(timings)])
        routing = eval_results.get("routing")
        if isinstance(routing, Mapping):
            shown = {k: v for k, v in routing.items() if k not in ("pairs", "confusion")}
            sections.append(["routing", _flatten(shown)])
    variants = []
    for row in rows:
        scored_with = row.get("scored_with")
        if isinstance(scored_with, Mapping) and scored_with not in variants:
            variants.append(scored_with)
            if len(variants) > 3:
                break
    for k, scored_with in enumerate(variants[:3]):
        title = "scored with" if len(variants) == 1 else f"scored with (variant {k + 1})"
        sections.append([title, _flatten(scored_with)])
    for name, value in settings.items():
        sections.append([name, _flatten(value)])
    domains: dict[str, int] = {}
    for row in rows:
        if row.get("domain") is not None:
            domains[str(row["domain"])] = domains.get(str(row["domain"]), 0) + 1
    if domains:
        sections.append(["domains (rows)", [[k, str(v)] for k, v in sorted(domains.items())]])
    return sections


# ---------------------------------------------------------------- eval


def _eval_tables(results: Mapping[str, Any], plots: Mapping[str, bytes] | None) -> dict[str, Any]:
    scorers = list(results.get("scorers") or [])
    names = [s.get("scorer", "?") for s in scorers]
    sections = []
    for section in SECTION_ORDER:
        values = [_float((s.get("sections") or {}).get(section)) for s in scorers]
        if any(v is not None for v in values):
            sections.append([section, values])
    subset_names: list[str] = []
    for s in scorers:
        subset_names += [k for k in (s.get("subsets") or {}) if k not in subset_names]
    subsets = []
    for name in subset_names:
        infos = [(s.get("subsets") or {}).get(name) or {} for s in scorers]
        first = next((i for i in infos if i), {})
        subsets.append(
            [
                name,
                first.get("section") or "(unknown)",
                first.get("total"),
                [_float(i.get("accuracy")) for i in infos],
            ]
        )
    images = [
        [title, "data:image/png;base64," + base64.b64encode(png).decode("ascii")]
        for title, png in (plots or {}).items()
    ]
    out = {"scorers": names, "sections": sections, "subsets": subsets, "plots": images}
    matrices = _rmbench_matrices(scorers)
    if matrices:
        out["matrices"] = matrices
    return out


def _rmbench_matrices(scorers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """RM-Bench's 3 x 3 style matrix of each scorer and domain (rows: chosen style, columns:
    rejected style), with hard/normal/easy.

    >>> scorer = {"scorer": "s", "benchmark": {"kind": "rmbench", "styles": ["a", "b", "c"],
    ...           "domains": {"chat": {"prompts": 2, "matrix": [[1, 0, 0]] * 3, "hard": 0,
    ...                                "normal": 0.33, "easy": 0.67}}}}
    >>> [(m["scorer"], m["domain"], m["prompts"]) for m in _rmbench_matrices([scorer])]
    [('s', 'chat', 2)]
    """
    out = []
    for scorer in scorers:
        bench = scorer.get("benchmark") or {}
        if bench.get("kind") != "rmbench":
            continue
        for domain, d in (bench.get("domains") or {}).items():
            out.append(
                {
                    "scorer": scorer.get("scorer", "?"),
                    "domain": domain,
                    "prompts": d.get("prompts"),
                    "styles": list(bench.get("styles") or []),
                    "matrix": [[_float(v) for v in line] for line in d.get("matrix") or []],
                    "levels": [[k, _float(d.get(k))] for k in ("hard", "normal", "easy")],
                }
            )
    return out
