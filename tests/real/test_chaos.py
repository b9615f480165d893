"""Chaos uploads (``tests/real/chaos.py``): uploads of random sizes by clients killed at random points
(the CLI among them) while API replicas are SIGKILLed and restarted many times and MinIO is killed
and restarted; after one reap, nothing is lost, corrupted or left open, and the database, the store
and the audit trail agree.

``make test`` runs a small version (48 uploads up to 16 MiB, at least 6 replica kills and one MinIO
kill); ``make chaos`` the full one (CHAOS_UPLOADS=300, CHAOS_MAX_MIB=200, at least 30 replica
kills and 2 MinIO kills), which writes its figures to ``bench/results/chaos.json``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import login, new_account, new_log
from tests.cli_helpers import personal_token
from tests.conftest import ADMIN_PASSWORD, Backend, real_settings
from tests.real.chaos import (
    Chaos,
    ChaosConfig,
    Replicas,
    git_commit,
    now_utc,
    plan_uploads,
    reap_once,
    run_uploads,
    table,
    verify,
    write_results,
)
from tests.real.processes import ApiProcess
from tests.services import REPO_ROOT, MariaDB, MinIO
from upload_plane.embedded import prepare
from upload_plane.settings import Settings

pytestmark = pytest.mark.real


@pytest.fixture
def chaos_settings(mariadb: MariaDB, private_minio: MinIO) -> Iterator[Settings]:
    """A database of the run's own on the session's MariaDB; the run's own MinIO (it gets killed)."""
    name = f"chaos_{secrets.token_hex(4)}"
    settings = real_settings(mariadb.create_database(name), private_minio)
    prepare(settings, ADMIN_PASSWORD)
    try:
        yield settings
    finally:
        mariadb.execute(f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.expects_5xx  # 503 while MinIO is down, by design; any other 5xx fails the run
def test_chaos_uploads_lose_nothing_and_leave_nothing_open(
    chaos_settings: Settings, private_minio: MinIO, tmp_path: Path
) -> None:
    config = ChaosConfig.from_env()
    planned = plan_uploads(config)
    with ExitStack() as stack:
        processes = [
            ApiProcess(Backend("real", chaos_settings, ""), private_minio, tmp_path / f"replica-{i}.log")
            for i in range(config.replicas)
        ]
        for process in processes:
            process.start()
            stack.callback(process.stop)
        backend = Backend("real", chaos_settings, processes[0].url)
        with login(backend, *new_account(backend)) as api:
            token = personal_token(api)
            log_id = new_log(api)["id"]
        chaos = Chaos(config, Replicas(processes), private_minio, token, log_id, tmp_path)
        stack.callback(chaos.front_door.close)

        result = run_uploads(chaos, planned, processes, private_minio)

        assert result.monkey_errors == [], f"the monkey failed: {result.monkey_errors!r}"
        assert all(p.running for p in processes) and private_minio.process is not None
        assert private_minio.process.running
        reap = reap_once(processes[0])
        api = stack.enter_context(
            httpx.Client(
                base_url=f"{processes[0].url}/api/v1",
                headers={"Authorization": f"Bearer {token}"},
                timeout=120,
            )
        )
        verdict = verify(result, chaos_settings, private_minio, api, reap, [p.log for p in processes])

    figures = verdict.figures
    document = {
        "measured_at": now_utc(),
        "commit": git_commit(REPO_ROOT),
        "config": {
            "uploads": config.uploads,
            "max_mib": config.max_bytes / 2**20,
            "seed": config.seed,
            "replicas": config.replicas,
            "workers": config.workers,
            "min_api_kills": config.api_kills,
            "min_minio_kills": config.minio_kills,
        },
        "figures": figures,
        "problems": verdict.problems,
        "notes": result.figures.notes[:50],
    }
    print("\nchaos uploads\n" + table({k: v for k, v in figures.items() if k != "reap"}))
    print(f"  reap          {figures['reap']}")
    print(json.dumps(document, indent=2))
    if config.results:
        write_results(config.results, document)

    assert verdict.problems == {}, json.dumps(verdict.problems, indent=2)[:6000]
    assert figures["reap"]["errors"] == 0, figures["reap"]
    assert figures["responses_5xx_other"] == 0, result.figures.notes
    # The chaos happened as asked: replicas and MinIO killed, clients and the CLI killed and resumed.
    assert figures["api_kills"] >= config.api_kills, figures
    assert figures["minio_kills"] >= config.minio_kills, figures
    assert figures["client_kills"] > 0 and figures["client_resumes"] >= figures["client_kills"], figures
    assert figures["cli_kills"] > 0 and figures["cli_runs"] > figures["cli_uploads"], figures
