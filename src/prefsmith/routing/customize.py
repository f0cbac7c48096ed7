"""Turn a scoring item and its domain into the customized conditioning context.

The customized context is the same list of messages for the strong and the weak model (each
model then renders it with its own template, exactly as for plain scoring, so the engine's
prompt/response token boundary is found the same way). Rendering, by ``exemplar_style``:

* ``system`` (default, close to the Dr.SoW code): one system turn holding the domain's
  criteria, then the exemplars as text::

      <criteria>

      Examples of a better and a worse response:

      User: <prompt>
      Better assistant: <better>
      Worse assistant: <worse>
      Why: <explanation>

  followed by the row's own conversation unchanged.
* ``turns``: the criteria as the system turn, then each exemplar as an earlier user turn and
  an assistant turn holding the *better* response (the worse one is not shown), then the row's
  conversation.
* ``user`` (the published Dr.SoW setting): the criteria as the system turn, and ONE exemplar,
  drawn from the domain's pool by the query's text (the same query always gets the same one),
  put in the last user turn before the query, so that the model scores its answer as the
  "good assistant"::

      Here is an example of a good and a bad assistant response.

      User: <prompt>
      Good Assistant: <better>
      Bad Assistant: <worse>
      Explanation: <explanation>

      Answer the next query as the good assistant.

      <the query>

* ``none``: the criteria only.

A row that brings its own system turn keeps it: the criteria (and exemplars) are put before
its text in that same system turn, separated by a blank line. A domain whose ``system_prompt``
is null and that has no exemplars leaves the context unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from prefsmith.data.messages import Message
from prefsmith.data.rows import ScoringItem
from prefsmith.routing.domains import Domain, DomainSet, Exemplar, load_domains
from prefsmith.routing.routers import ROUTERS, Route, Router, last_user_text, make_router

ExemplarStyle = Literal["system", "turns", "user", "none"]
EXEMPLAR_STYLES = ("system", "turns", "user", "none")
#: A customization's router and exemplar style when neither the run nor the file names one.
DEFAULT_ROUTER, DEFAULT_EXEMPLARS = "embedding", "system"


def render_exemplars(exemplars: Sequence[Exemplar]) -> str:
    """The exemplars as one text block (the ``system`` style).

    >>> print(render_exemplars([Exemplar(prompt="2+2?", better="4", worse="5",
    ...                                  explanation="4 is right.")]))
    Examples of a better and a worse response:
    <BLANKLINE>
    User: 2+2?
    Better assistant: 4
    Worse assistant: 5
    Why: 4 is right.
    """
    blocks = []
    for ex in exemplars:
        lines = [
            f"User: {ex.prompt}",
            f"Better assistant: {ex.better}",
            f"Worse assistant: {ex.worse}",
        ]
        if ex.explanation:
            lines.append(f"Why: {ex.explanation}")
        blocks.append("\n".join(lines))
    return "Examples of a better and a worse response:\n\n" + "\n\n".join(blocks)


def pick_exemplar(exemplars: Sequence[Exemplar], query: str) -> Exemplar:
    """One exemplar of a domain's pool for ``query``: drawn by a hash of the query's text, so
    a query always gets the same one, whatever the other rows of a run.

    >>> pool = [Exemplar(prompt=f"q{i}", better="b", worse="w") for i in range(3)]
    >>> pick_exemplar(pool, "Hello") == pick_exemplar(pool, "Hello")
    True
    """
    import hashlib

    digest = hashlib.sha256(query.encode("utf-8")).digest()
    return exemplars[int.from_bytes(digest[:8], "big") % len(exemplars)]


def user_turn_exemplar(exemplar: Exemplar, query: str) -> str:
    """The last user turn with ``exemplar`` before ``query`` (the ``user`` style).

    >>> print(user_turn_exemplar(Exemplar(prompt="2+2?", better="4", worse="5",
    ...                                   explanation="4 is right."), "3+3?"))
    Here is an example of a good and a bad assistant response.
    <BLANKLINE>
    User: 2+2?
    Good Assistant: 4
    Bad Assistant: 5
    Explanation: 4 is right.
    <BLANKLINE>
    Answer the next query as the good assistant.
    <BLANKLINE>
    3+3?
    """
    lines = [
        "Here is an example of a good and a bad assistant response.",
        "",
        f"User: {exemplar.prompt}",
        f"Good Assistant: {exemplar.better}",
        f"Bad Assistant: {exemplar.worse}",
    ]
    if exemplar.explanation:
        lines.append(f"Explanation: {exemplar.explanation}")
    return "\n".join([*lines, "", "Answer the next query as the good assistant.", "", query])


def _with_user_exemplar(messages: list[Message], exemplars: Sequence[Exemplar]) -> None:
    """Put one exemplar of ``exemplars`` before the text of the last user turn (in place)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last is None or not exemplars:
        return
    query = messages[last]["content"]
    exemplar = pick_exemplar(exemplars, query)
    messages[last] = {**messages[last], "content": user_turn_exemplar(exemplar, query)}


def customized_context(
    context: Sequence[Message], domain: Domain, exemplar_style: ExemplarStyle = "system"
) -> tuple[Message, ...]:
    """The conditioning context of ``context`` customized for ``domain``.

    >>> d = Domain(name="math", description="maths", system_prompt="Be correct.",
    ...            exemplars=[Exemplar(prompt="1+1?", better="2", worse="3")])
    >>> user = ({"role": "user", "content": "2+2?"},)
    >>> [m["role"] for m in customized_context(user, d, "turns")]
    ['system', 'user', 'assistant', 'user']
    >>> customized_context(user, d, "none")[0]["content"]
    'Be correct.'
    >>> own = ({"role": "system", "content": "Be brief."}, *user)
    >>> customized_context(own, d, "none")[0]["content"]
    'Be correct.\\n\\nBe brief.'
    """
    if exemplar_style not in EXEMPLAR_STYLES:
        raise ValueError(f"exemplar_style must be one of {EXEMPLAR_STYLES}, not {exemplar_style!r}")
    exemplars = domain.exemplars if exemplar_style != "none" else ()
    parts = [domain.system_prompt] if domain.system_prompt else []
    turns: list[Message] = []
    if exemplars and exemplar_style == "system":
        parts.append(render_exemplars(exemplars))
    elif exemplars and exemplar_style == "turns":
        for ex in exemplars:
            turns += [
                {"role": "user", "content": ex.prompt},
                {"role": "assistant", "content": ex.better},
            ]
    messages = [dict(m) for m in context]
    if exemplar_style == "user":
        _with_user_exemplar(messages, exemplars)  # type: ignore[arg-type]
    if messages and messages[0]["role"] == "system":
        parts.append(messages.pop(0)["content"])
    head = [{"role": "system", "content": "\n\n".join(parts)}] if parts else []
    return tuple(head + turns + messages)


def customize_item(
    item: ScoringItem, domain: Domain, exemplar_style: ExemplarStyle = "system"
) -> ScoringItem:
    """``item`` with its context customized for ``domain`` (responses unchanged)."""
    return replace(item, context=customized_context(item.context, domain, exemplar_style))


@dataclass(frozen=True)
class CustomizedItems:
    """Items after routing and customization.

    Attributes:
        items: Customized items, aligned with the input.
        routes: Domain and router confidence of each item.
    """

    items: list[ScoringItem]
    routes: list[Route]

    @property
    def domains(self) -> list[str]:
        """Domain name of each item."""
        return [r.domain for r in self.routes]

    @property
    def confidences(self) -> list[float]:
        """Router confidence of each item."""
        return [r.confidence for r in self.routes]


def customize_items(
    items: Sequence[ScoringItem],
    domains: DomainSet,
    router: Router,
    exemplar_style: ExemplarStyle = "system",
) -> CustomizedItems:
    """Route every item by its last user turn and customize its context for that domain."""
    routes = router.route([last_user_text(item.context) for item in items])
    customized = [
        customize_item(item, domains[route.domain], exemplar_style)
        for item, route in zip(items, routes, strict=True)
    ]
    return CustomizedItems(customized, routes)


def route_fields(routes: Sequence[Route]) -> list[dict[str, Any]]:
    """The fields routing adds to each scored row: ``domain`` and ``router_confidence``.

    >>> route_fields([Route("math", 0.91234567)])
    [{'domain': 'math', 'router_confidence': 0.912346}]
    """
    return [{"domain": r.domain, "router_confidence": round(r.confidence, 6)} for r in routes]


class Customization:
    """The customized density ratio's settings and state: domains, router, exemplar style.

    Give it to a reward (``DensityRatioReward(..., customization=Customization())``): before
    scoring, every item is routed by its last user turn and its context rewritten for the
    domain (:func:`customized_context`); the rows gain ``domain`` and ``router_confidence``.

    Args:
        domains: A domains YAML file, a loaded :class:`DomainSet`, or ``None`` for the shipped
            default.
        router: ``embedding``, ``rules`` or ``lm`` (the strong model classifies the prompt), or
            a router object; ``None``: the domains file's ``router``, else ``embedding``.
        exemplars: How exemplars enter the context: ``system``, ``turns``, ``user`` or
            ``none``; ``None``: the domains file's ``exemplars``, else ``system``.

    >>> c = Customization(router="rules")
    >>> sorted(c.settings())
    ['domains_file', 'exemplar_style', 'router']
    """

    def __init__(
        self,
        domains: DomainSet | str | Path | None = None,
        router: str | Router | None = None,
        exemplars: ExemplarStyle | None = None,
    ) -> None:
        self.domains = domains if isinstance(domains, DomainSet) else load_domains(domains)
        router = router or self.domains.router or DEFAULT_ROUTER
        exemplars = exemplars or self.domains.exemplars or DEFAULT_EXEMPLARS
        if exemplars not in EXEMPLAR_STYLES:
            raise ValueError(
                f"exemplars must be one of {', '.join(EXEMPLAR_STYLES)}, not {exemplars!r}"
            )
        if isinstance(router, str) and router not in ROUTERS:
            raise ValueError(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")
        self.router_name = router if isinstance(router, str) else router.name
        self._router: Router | None = None if isinstance(router, str) else router
        self.exemplar_style = exemplars

    def router(self, reward: Any = None) -> Router:
        """The router, built on first use (``lm`` uses the strong model of ``reward``)."""
        if self._router is None:
            self._router = make_router(
                self.router_name, self.domains, getattr(reward, "strong", None)
            )
        return self._router

    def route(
        self, items: Sequence[ScoringItem], reward: Any = None
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """Route ``items`` by their last user turn: each one's domain and extra row fields.

        For rewards that use the domain their own way (``contrast:``); :meth:`apply` routes
        and rewrites the contexts.
        """
        routes = self.router(reward).route([last_user_text(item.context) for item in items])
        return [r.domain for r in routes], route_fields(routes)

    def apply(
        self, items: Sequence[ScoringItem], reward: Any = None
    ) -> tuple[list[ScoringItem], list[dict[str, Any]]]:
        """Route and customize ``items``; return them with each row's extra fields."""
        done = customize_items(items, self.domains, self.router(reward), self.exemplar_style)
        return done.items, route_fields(done.routes)

    def settings(self) -> dict[str, Any]:
        """What to record next to the rewards."""
        return {
            "domains_file": self.domains.source,
            "router": self.router_name,
            "exemplar_style": self.exemplar_style,
        }
