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
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from tests.api.helpers import new_account, sql_rows
from tests.conftest import Backend, real_backend
from tests.faultproxy import Fault, fault_proxy
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


@pytest.fixture
def own_database(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A database of its own: the bug planted below leaves a start half-made, for no other test."""
    with real_backend(request, "log_leaks") as backend:
        yield backend


@pytest.mark.expects_5xx
def test_every_error_path_of_the_link_routes_leaves_no_whole_token_in_any_log(
    own_database: Backend, minio: MinIO, tmp_path: Path
) -> None:
    """Acceptance (issue 16, 6): the link routes answer every error they have, with a link token in
    the path, on two `serve` processes: one whose store refuses the first start (502, logged as an
    error) and one where a bug strikes during a start (500, logged with its traceback). No log line
    of either holds a whole link token or Uppy capability; the 5xx lines are there, shortened."""
    name, password = new_account(own_database)
    store = fault_proxy(minio.endpoint, Fault("CreateMultipartUpload", 403, "AccessDenied", times=1))
    with (
        store as proxy,
        serve_process(own_database, minio, tmp_path / "a.log", s3_endpoint_url=proxy.url) as a,
        serve_process(own_database, minio, tmp_path / "b.log", failpoints="after_start_row=raise") as b,
        httpx.Client(timeout=60) as http,
        httpx.Client(base_url=f"{a}/api/v1", timeout=60) as api,
    ):
        token = api.post("/auth/login", json={"username": name, "password": password}).json()
        api.headers["Authorization"] = f"Bearer {token['access_token']}"
        case = api.post("/cases", json={"title": "leaks"}).json()
        log_id = api.post(f"/cases/{case['id']}/logs", json={"name": "l"}).json()["id"]

        def link(**budget: int) -> dict[str, str]:
            made = api.post(f"/logs/{log_id}/upload-links", json={"expires_in": 3600, **budget})
            assert made.status_code == 201, made.text
            return dict(made.json())

        live, one_file, revoked, expired, buggy = link(), link(max_files=1), link(), link(), link()
        start = {"filename": "e.bin", "metadata": {"size": 6 * 1024 * 1024}}
        seen: list[int] = []

        def call(base: str, method: str, path: str, **kw: object) -> httpx.Response:
            resp = http.request(method, f"{base}{path}", **kw)  # type: ignore[arg-type]
            seen.append(resp.status_code)
            # Every answer, 5xx included, carries the security headers and the CSP.
            assert resp.headers["x-content-type-options"] == "nosniff", (path[:60], resp.status_code)
            assert "frame-ancestors 'none'" in resp.headers["content-security-policy"], resp.status_code
            return resp

        lt = f"/links/{live['token']}"
        assert call(a, "POST", f"{lt}/s3/multipart", json=start).status_code == 502  # the store refuses
        call(a, "GET", lt)
        call(a, "GET", f"/u/{live['token']}")
        call(a, "GET", f"/u/{live['token']}/no-such-page")
        call(a, "TRACE", lt)
        call(
            a,
            "POST",
            f"{lt}/s3/multipart",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        call(a, "GET", f"{lt}/s3/params", params={"filename": "a", "metadata[size]": str(2**50)})
        started = call(a, "POST", f"{lt}/s3/multipart", json=start).json()
        cap, key = quote(started["uploadId"], safe=""), started["key"]
        call(a, "GET", f"{lt}/s3/multipart/{cap}/1", params={"key": key + "x"})
        call(a, "GET", f"{lt}/s3/multipart/{cap}/99", params={"key": key})
        call(a, "GET", f"{lt}/s3/multipart/c1.forged.x/1", params={"key": key})
        call(a, "GET", f"{lt}/s3/multipart/c1.{'x' * 6000}/1", params={"key": key})
        call(a, "POST", f"{lt}/s3/multipart/{cap}/complete", params={"key": key}, json={"parts": []})
        call(a, "GET", f"{lt}/{'x' * 9000}")
        ot = f"/links/{one_file['token']}"
        call(a, "POST", f"{ot}/s3/multipart", json=start)
        call(a, "POST", f"{ot}/s3/multipart", json=start)  # all of its files are taken
        assert api.delete(f"/upload-links/{revoked['id']}").status_code == 200
        call(a, "POST", f"/links/{revoked['token']}/s3/multipart", json=start)
        sql_rows(
            own_database.settings,
            "UPDATE upload_links SET expires_at = UTC_TIMESTAMP() - INTERVAL 1 HOUR WHERE id = %s",
            expired["id"],
        )
        call(a, "GET", f"/links/{expired['token']}")
        assert call(b, "POST", f"/links/{buggy['token']}/s3/multipart", json=start).status_code == 500
    assert {400, 401, 403, 404, 405, 409, 410, 413, 414, 500, 502} <= set(seen), sorted(set(seen))
    secrets_ = [lk["token"] for lk in (live, one_file, revoked, expired, buggy)] + [started["uploadId"]]
    for log in (tmp_path / "a.log", tmp_path / "b.log"):
        text = log.read_text()
        leaked = [s[:12] + "..." for s in secrets_ if s in text]
        assert not leaked, (log.name, leaked)
        assert "uplnk_" in text  # the link routes were logged, shortened
    a_log, b_log = (tmp_path / "a.log").read_text(), (tmp_path / "b.log").read_text()
    assert f"STORAGE_REJECTED on POST /links/{live['token'][:8]}…/s3/multipart" in a_log
    assert f"unhandled error on POST /links/{buggy['token'][:8]}…/s3/multipart" in b_log
    assert "FailpointError" in b_log  # with its traceback
