"""Run the reward server: uvicorn in this process, or replicas on Ray Serve (``--replicas``)."""

from __future__ import annotations

import logging

from prefsmith.integrations.server import ServeConfig, check_exposure, create_app
from prefsmith.rewards.base import Reward

log = logging.getLogger("prefsmith.serve")


def serve(config: ServeConfig, reward: Reward | None = None) -> None:
    """Run the server of ``config`` until SIGTERM or Ctrl-C, then drain and return.

    With ``config.replicas`` the app runs on Ray Serve
    (:func:`~prefsmith.integrations.ray_serve.serve_on_ray`; ``reward`` is then ignored: each
    replica builds its own); otherwise uvicorn serves it here, and on SIGTERM stops accepting,
    answers the requests in flight (up to ``config.drain_timeout_s``) and exits.
    """
    warning = check_exposure(config)
    if warning:
        logging.basicConfig()
        log.warning(warning)
    if config.replicas:
        from prefsmith.integrations.ray_serve import serve_on_ray

        serve_on_ray(config.resolved())
        return
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, reward),
            host=config.host,
            port=config.port,
            log_level="info",
            timeout_graceful_shutdown=int(config.drain_timeout_s) or None,
            access_log=False,
        )
    )
    server.run()
