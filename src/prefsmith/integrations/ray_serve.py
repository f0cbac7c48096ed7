"""The reward server on Ray Serve: ``prefsmith serve --replicas N [--ray-address ADDR]``.

The same FastAPI app (:func:`~prefsmith.integrations.server.create_app`) is the ingress of a
Ray Serve deployment (``@serve.ingress``, built on each replica at its start), with ``N``
replicas of ``cpus_per_replica`` CPUs and ``gpus_per_replica`` GPUs each. Ray Serve's proxy
spreads requests over the replicas; inside a replica, its own batcher shares scoring batches
between the requests it holds (up to ``max_ongoing_requests``). ``/metrics`` and ``/health``
answer for the replica that takes the request (``pid`` tells them apart). On SIGTERM or Ctrl-C
the application is deleted: each replica gets ``drain_timeout_s`` to answer what it holds.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from prefsmith.integrations.server import ServeConfig, create_app

#: The Ray Serve application's name.
APP_NAME = "prefsmith"


def import_serve() -> Any:
    """``ray.serve``, or an error naming the extra to install."""
    try:
        from ray import serve
    except ImportError as err:
        raise ImportError(
            "--replicas runs on Ray Serve: pip install 'prefsmith[serve]' (ray[serve])"
        ) from err
    return serve


def application(config: ServeConfig) -> Any:
    """The Ray Serve application of ``config``: its deployment, bound, ready for
    ``serve.run``."""
    serve = import_serve()

    @serve.deployment(name="RewardServer")
    @serve.ingress()
    class RewardServer:
        def __init__(self, config: ServeConfig) -> None:
            self.config = config

        def __serve_build_asgi_app__(self) -> Any:
            return create_app(self.config)

    actor = {"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica}
    return RewardServer.options(
        num_replicas=config.replicas,
        ray_actor_options=actor,
        max_ongoing_requests=config.max_ongoing_requests,
        graceful_shutdown_timeout_s=config.drain_timeout_s,
    ).bind(config)


def start(config: ServeConfig) -> None:
    """Connect to (or start) Ray, start Serve's HTTP proxy on ``config.host:port`` and deploy
    the replicas; returns once they are ready."""
    import ray

    serve = import_serve()
    if not ray.is_initialized():
        ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(application(config), name=APP_NAME, route_prefix="/")


def stop() -> None:
    """Delete the application (replicas drain) and shut Serve down."""
    serve = import_serve()
    serve.delete(APP_NAME)
    serve.shutdown()


def serve_on_ray(config: ServeConfig) -> None:
    """Deploy, then wait for SIGTERM or Ctrl-C, then drain and stop."""
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    start(config)
    print(f"serving on http://{config.host}:{config.port} with {config.replicas} replicas")
    done.wait()
    stop()
