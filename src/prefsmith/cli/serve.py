"""``prefsmith serve``: an HTTP reward server (OpenRLHF's remote RM protocol, prefsmith rows).

Its options are the settings of :class:`~prefsmith.integrations.config.ServeConfig`, derived as
the stages' are (:func:`~prefsmith.cli.stages.config_command`).
"""

from __future__ import annotations

from typing import Any

from prefsmith.cli.stages import config_command
from prefsmith.integrations.config import ServeConfig


def _serve(config: Any) -> None:
    from prefsmith.integrations.launch import serve

    serve(config)


serve = config_command(
    ServeConfig,
    _serve,
    "Serve rewards over HTTP: POST /get_reward (OpenRLHF), POST /score, GET /health, /metrics.",
    flags={"drain_timeout_s": "--drain-timeout"},
)
