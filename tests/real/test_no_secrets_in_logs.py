"""The service's logs never hold a whole secret: passwords, access, refresh and personal access
tokens, the session cookie, presigned URL signatures, the signing and store secrets. The server runs
as production runs it (`upload-plane serve`, its own process, its own stdout/stderr), and the test
drives a full upload, logins (good and bad), refresh, tokens and download through it. Every line is
a JSON object; the complete's access line carries the request id the client sent."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.api.helpers import new_account
from tests.conftest import Backend
from tests.real.processes import serve_process
from tests.services import MinIO

pytestmark = pytest.mark.real


def test_a_full_session_leaves_no_secret_in_the_logs(real: Backend, minio: MinIO, tmp_path: Path) -> None:
    name, password = new_account(real)
    log = tmp_path / "server.log"
    secrets_seen: list[str] = [password, real.settings.jwt_secret, minio.secret_key]
    data = os.urandom(5 * 1024 * 1024 + 17)
    with serve_process(real, minio, log) as base, httpx.Client(base_url=f"{base}/api/v1", timeout=60) as api:
        bad = api.post("/auth/login", json={"username": name, "password": password + "x"})
        assert bad.status_code == 401
        secrets_seen.append(password + "x")
        signed = api.post("/auth/login", json={"username": name, "password": password})
        assert signed.status_code == 200
        tokens = signed.json()
        cookie = signed.cookies["upload_plane_session"]
        secrets_seen += [tokens["access_token"], tokens["refresh_token"], cookie]
        rotated = api.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).json()
        secrets_seen += [rotated["access_token"], rotated["refresh_token"]]
        auth = {"Authorization": f"Bearer {rotated['access_token']}"}
        pat = api.post("/tokens", json={"name": "ci", "expires_in_days": 1}, headers=auth).json()["token"]
        secrets_seen.append(pat)
        auth = {"Authorization": f"Bearer {pat}"}
        api.cookies.set("upload_plane_session", cookie)
        case = api.post("/cases", json={"title": "logs"}, headers={"Origin": base}).json()  # by cookie
        api.cookies.clear()
        log_id = api.post(f"/cases/{case['id']}/logs", json={"name": "l"}, headers=auth).json()["id"]
        upload = api.post(
            f"/logs/{log_id}/uploads",
            json={
                "filename": "e.bin",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "part_size": 5 * 1024 * 1024,
            },
            headers=auth,
        ).json()
        parts = api.post(
            f"/uploads/{upload['id']}/parts", json={"part_numbers": [1, 2]}, headers=auth
        ).json()["parts"]
        with httpx.Client(timeout=60) as store:
            for part in parts:
                body = data[(part["part_number"] - 1) * upload["part_size"] :][: part["size"]]
                assert store.put(part["url"], content=body, headers=part["headers"]).status_code == 200
                secrets_seen.append(parse_qs(urlsplit(part["url"]).query)["X-Amz-Signature"][0])
        done = api.post(
            f"/uploads/{upload['id']}/complete", headers={**auth, "X-Request-ID": "evidence-run-42"}
        )
        assert done.status_code == 200 and done.headers["x-request-id"] == "evidence-run-42"
        download = api.get(f"/files/{upload['file_id']}/download", headers=auth)
        assert download.status_code == 307
        secrets_seen.append(parse_qs(urlsplit(download.headers["location"]).query)["X-Amz-Signature"][0])
        assert (
            api.post(
                "/auth/logout", headers={"Authorization": f"Bearer {rotated['access_token']}"}
            ).status_code
            == 204
        )
    text = log.read_text()
    assert len(text.splitlines()) >= 15, text  # the server did log the session
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    (access,) = [line for line in lines if line.get("request_id") == "evidence-run-42"]
    assert access["logger"] == "upload_plane.access"
    assert access["route"] == "/api/v1/uploads/{upload_id}/complete"
    assert access["path"] == f"/api/v1/uploads/{upload['id']}/complete"
    assert access["status"] == 200 and access["ms"] > 0
    leaked = [s[:12] + "..." for s in secrets_seen if s in text]
    assert not leaked, leaked
    # No bearer credential or signature of any kind, even one this test did not think of.
    assert not re.search(r"eyJ[\w-]{10,}\.[\w-]{10,}\.", text), "a JWT is in the logs"
    assert "uppat_" not in text and "uprt_" not in text
    assert "X-Amz-Signature=" not in text
