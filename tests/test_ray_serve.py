"""`prefsmith serve --replicas 2`: the reward server on Ray Serve, two local CPU replicas."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from prefsmith.integrations.server import ServeConfig
from prefsmith.rewards.spec import parse_scorer
from prefsmith.testing import tiny_model

serve = pytest.importorskip(
    "ray.serve", reason="Ray Serve is missing: pip install 'prefsmith[serve]'"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_replicas_answer_like_offline_scoring(tmp_path) -> None:
    import ray

    from prefsmith.integrations import ray_serve

    scorer = f"density-ratio:{tiny_model(seed=0)},{tiny_model(seed=1)}:sum"
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"Yes {i}.", "rejected": "No."} for i in range(6)
    ]
    expected = [r["reward_margin"] for r in parse_scorer(scorer).score(rows)]
    config = ServeConfig(
        scorer=scorer, port=free_port(), replicas=2, cpus_per_replica=0.5, api_key="k"
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray_serve.start(config)
        url, auth = f"http://127.0.0.1:{config.port}", {"Authorization": "Bearer k"}
        pids, margins = set(), []
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(httpx.get(f"{url}/health", timeout=30).json()["pid"])
        for row in rows:
            response = httpx.post(f"{url}/score", json={"rows": [row]}, headers=auth, timeout=60)
            margins.append(response.json()["results"][0]["reward_margin"])
        denied = httpx.post(f"{url}/score", json={"rows": rows[:1]}, timeout=60)
        ray_serve.stop()
    finally:
        ray.shutdown()
    assert len(pids) == 2, "both replicas answer"
    assert margins == expected
    assert denied.status_code == 401
