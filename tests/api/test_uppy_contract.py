"""Upload links and the Uppy Companion S3 contract, called as ``@uppy/aws-s3`` 6 calls it, on both
backends (moto + SQLite, MinIO + MariaDB).

Acceptance (issue 11, 3): "Uppy-route security: a key that does not belong to the uploadId, an
uploadId of another log, an expired or revoked link, a file over the link's byte budget, a part
number outside the plan -> refused with the right 4xx; an unknown upload -> 404."
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlmodel import select

from tests.api.helpers import (
    MIB,
    assert_problem,
    backend_db,
    expire_link,
    new_account,
    new_log,
    new_user,
    reap_a_dead_claim,
    record_server_errors,
    sign_in,
    store,
)
from tests.conftest import ADMIN_PASSWORD, Backend
from upload_plane.models import Upload
from upload_plane.uploads.kinds import FORM_POST


def anonymous(backend: Backend) -> httpx.Client:
    """A client with no credentials at all (what a link's holder has)."""
    return httpx.Client(
        base_url=backend.base_url, timeout=60, event_hooks={"response": [record_server_errors]}
    )


def new_link(api: httpx.Client, log_id: str, **body: Any) -> dict[str, Any]:
    resp = api.post(f"/logs/{log_id}/upload-links", json={"expires_in": 3600, **body})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def endpoint(link: dict[str, Any]) -> str:
    """The path of the link's companionEndpoint on the API (what Uppy prefixes with ``/s3``)."""
    return httpx.URL(link["companion_endpoint"]).path


def uppy_multipart(
    http: httpx.Client, anon: httpx.Client, base: str, data: bytes, name: str = "video.bin", **meta: Any
) -> dict[str, Any]:
    """What ``AwsS3`` does for a multipart upload: create, sign and PUT each part in turn (reading
    the ETag), complete. Returns the create answer and the completion."""
    created = anon.post(
        f"{base}/s3/multipart",
        json={"filename": name, "type": "application/octet-stream", "metadata": {"size": len(data), **meta}},
    )
    assert created.status_code == 200, created.text
    upload_id, key = created.json()["uploadId"], created.json()["key"]
    chunk = 5 * MIB
    parts = []
    for n, offset in enumerate(range(0, len(data), chunk), start=1):
        signed = anon.get(f"{base}/s3/multipart/{quote(upload_id, safe='')}/{n}", params={"key": key})
        assert signed.status_code == 200, signed.text
        put = http.put(signed.json()["url"], content=data[offset : offset + chunk])
        assert put.status_code == 200, put.text[:300]
        parts.append({"PartNumber": n, "ETag": put.headers["etag"]})
    done = anon.post(
        f"{base}/s3/multipart/{quote(upload_id, safe='')}/complete",
        params={"key": key},
        json={"parts": parts},
    )
    assert done.status_code == 200, done.text
    return {"uploadId": upload_id, "key": key, "complete": done.json()}


def uppy_post(http: httpx.Client, anon: httpx.Client, base: str, data: bytes, name: str = "small.bin") -> str:
    """What ``AwsS3`` does for a small file: ``/s3/params``, then the form POST to the store; and
    what our pages do on ``upload-success``: settle (with the form's key). Returns the file's id."""
    params = anon.get(
        f"{base}/s3/params",
        params={"filename": name, "type": "application/octet-stream", "metadata[size]": str(len(data))},
    )
    assert params.status_code == 200, params.text
    form = params.json()
    assert form["method"] == "POST" and form["url"].endswith("/")
    posted = http.post(form["url"], data=form["fields"], files={"file": (name, data)})
    assert posted.status_code in (200, 201, 204), posted.text[:500]
    settled = anon.post(f"{base}/s3/settle", params={"key": form["fields"]["key"]})
    assert settled.status_code == 200, settled.text
    assert settled.json()["status"] == "completed"
    return str(settled.json()["file_id"])


def files_of(api: httpx.Client, log_id: str) -> dict[str, dict[str, Any]]:
    resp = api.get(f"/logs/{log_id}/files")
    assert resp.status_code == 200, resp.text
    return {f["key"]: f for f in resp.json()["items"]}


def test_a_link_uploads_through_both_uppy_paths_and_the_audit_names_it(
    backend: Backend, http: httpx.Client
) -> None:
    with new_user(backend) as manager, anonymous(backend) as anon:
        log = new_log(manager)
        link = new_link(manager, log["id"], max_files=5, max_bytes=100 * MIB)
        assert link["token"].startswith("uplnk_") and link["url"].endswith(f"/u/{link['token']}")
        assert link["companion_endpoint"].endswith(f"/links/{link['token']}")
        info = anon.get(endpoint(link))
        assert info.status_code == 200 and info.json()["log_name"] == "bodycam", info.text
        big, small = os.urandom(12 * MIB + 5), os.urandom(MIB)
        multipart = uppy_multipart(http, anon, endpoint(link), big)
        small_id = uppy_post(http, anon, endpoint(link), small)
        assert multipart["complete"]["key"] == multipart["key"]
        files = files_of(manager, log["id"])
        [key] = [k for k, f in files.items() if f["id"] == small_id]
        assert files[multipart["key"]]["status"] == "available" and files[multipart["key"]]["size"] == len(
            big
        )
        assert files[key]["status"] == "available" and files[key]["size"] == len(small)
        for f in files.values():
            assert f["upload_link_id"] == link["id"]
        got = http.get(manager.get(f"/files/{files[key]['id']}/download?redirect=false").json()["url"])
        assert hashlib.sha256(got.content).digest() == hashlib.sha256(small).digest()
        events = manager.get(f"/cases/{log['case_id']}/audit", params={"limit": 100}).json()["items"]
        by_link = [e for e in events if e["details"].get("upload_link_id") == link["id"]]
        actions = sorted(e["action"] for e in by_link)
        assert actions == ["upload.completed", "upload.completed", "upload.started", "upload.started"], (
            actions
        )
        assert all(e["actor"] == f"upload link {link['hint']}" and e["actor_id"] is None for e in by_link)
        listed = manager.get(f"/logs/{log['id']}/upload-links").json()["items"]
        assert [(x["id"], x["files_used"], x["bytes_used"]) for x in listed] == [
            (link["id"], 2, len(big) + len(small))
        ]
        assert "token" not in listed[0]


def test_signed_in_users_use_the_same_contract_with_their_session_cookie(
    backend: Backend, http: httpx.Client
) -> None:
    from tests.api.helpers import new_account, sign_in

    name, password = new_account(backend)
    cookie = sign_in(backend, name, password).cookies["upload_plane_session"]
    with httpx.Client(
        base_url=backend.base_url, timeout=60, event_hooks={"response": [record_server_errors]}
    ) as page:
        page.cookies.set("upload_plane_session", cookie)
        page.headers["Origin"] = backend.base_url  # what a same-origin page's fetch sends
        case = page.post("/api/v1/cases", json={"title": "uppy"}).json()
        log = page.post(f"/api/v1/cases/{case['id']}/logs", json={"name": "uppy"}).json()
        data = os.urandom(11 * MIB)
        done = uppy_multipart(http, page, "", data, log_id=log["id"])
        assert done["key"].startswith(f"cases/{case['id']}/logs/{log['id']}/")
        assert page.get(f"/api/v1/logs/{log['id']}/files").json()["items"][0]["status"] == "available"
        # without metadata.log_id a user's upload has nowhere to go
        resp = page.post("/s3/multipart", json={"filename": "x", "metadata": {"size": 1}})
        assert_problem(resp, 400, "VALIDATION_ERROR")
        # a cross-site page cannot start one with the cookie
        resp = page.post(
            "/s3/multipart",
            json={"filename": "x", "metadata": {"size": 1, "log_id": log["id"]}},
            headers={"Origin": "https://evil.example"},
        )
        assert_problem(resp, 403, "CROSS_SITE_REQUEST")


def test_uppy_route_security(backend: Backend, http: httpx.Client) -> None:
    """Acceptance 3, route by route."""
    with new_user(backend) as manager, anonymous(backend) as anon:
        log, other_log = new_log(manager), new_log(manager)
        link = new_link(manager, log["id"], max_bytes=30 * MIB)
        other = new_link(manager, other_log["id"])
        base, other_base = endpoint(link), endpoint(other)
        created = anon.post(
            f"{base}/s3/multipart", json={"filename": "a.bin", "metadata": {"size": 12 * MIB}}
        )
        assert created.status_code == 200, created.text
        upload_id, key = created.json()["uploadId"], created.json()["key"]
        uid = quote(upload_id, safe="")
        mine = anon.post(
            f"{other_base}/s3/multipart", json={"filename": "b.bin", "metadata": {"size": 6 * MIB}}
        )
        other_key = mine.json()["key"]

        # a key that does not belong to the uploadId
        assert_problem(
            anon.get(f"{base}/s3/multipart/{uid}/1", params={"key": other_key}), 403, "KEY_MISMATCH"
        )
        assert_problem(anon.get(f"{base}/s3/multipart/{uid}", params={"key": other_key}), 403, "KEY_MISMATCH")
        resp = anon.post(f"{base}/s3/multipart/{uid}/complete", params={"key": other_key}, json={"parts": []})
        assert_problem(resp, 403, "KEY_MISMATCH")
        assert_problem(
            anon.delete(f"{base}/s3/multipart/{uid}", params={"key": other_key}), 403, "KEY_MISMATCH"
        )
        # an uploadId of another log (through that log's link)
        for resp in (
            anon.get(f"{other_base}/s3/multipart/{uid}/1", params={"key": key}),
            anon.get(f"{other_base}/s3/multipart/{uid}", params={"key": key}),
            anon.delete(f"{other_base}/s3/multipart/{uid}", params={"key": key}),
        ):
            assert_problem(resp, 404, "NOT_FOUND")
        # ... or by a signed-in user who is not the link (the admin included): another scope's
        # capability is not found
        for username, password in (new_account(backend), ("admin", ADMIN_PASSWORD)):
            cookie = sign_in(backend, username, password).cookies["upload_plane_session"]
            with anonymous(backend) as page:
                page.cookies.set("upload_plane_session", cookie)
                me = page.get("/api/v1/me")  # the cookie signs the page in: not an anonymous request
                assert me.status_code == 200 and me.json()["username"] == username, me.text
                for resp in (
                    page.get(f"/s3/multipart/{uid}/1", params={"key": key}),
                    page.get(f"/s3/multipart/{uid}", params={"key": key}),
                ):
                    assert_problem(resp, 404, "NOT_FOUND")
        # a part number outside the plan (12 MiB in 5 MiB parts: 3)
        for n in (0, 4, 10001):
            assert_problem(
                anon.get(f"{base}/s3/multipart/{uid}/{n}", params={"key": key}), 400, "VALIDATION_ERROR"
            )
        assert anon.get(f"{base}/s3/multipart/{uid}/3", params={"key": key}).status_code == 200
        resp = anon.post(
            f"{base}/s3/multipart/{uid}/complete",
            params={"key": key},
            json={"parts": [{"PartNumber": 9, "ETag": "x"}]},
        )
        assert_problem(resp, 400, "VALIDATION_ERROR")
        # an unknown upload: garbage, a forged capability, a tampered one
        tampered = upload_id[:-3] + ("AAA" if not upload_id.endswith("AAA") else "BBB")
        for bad in ("nope", "c1.e30.AAAA", quote(tampered, safe="")):
            assert_problem(anon.get(f"{base}/s3/multipart/{bad}/1", params={"key": key}), 404, "NOT_FOUND")
            assert_problem(anon.get(f"{base}/s3/multipart/{bad}", params={"key": key}), 404, "NOT_FOUND")
            resp = anon.post(f"{base}/s3/multipart/{bad}/complete", params={"key": key}, json={"parts": []})
            assert_problem(resp, 404, "NOT_FOUND")
            assert_problem(anon.delete(f"{base}/s3/multipart/{bad}", params={"key": key}), 404, "NOT_FOUND")
        assert_problem(anon.post(f"{base}/s3/settle", params={"key": "cases/x/y"}), 404, "NOT_FOUND")
        # a file over the link's byte budget (30 MiB, 12 MiB taken)
        resp = anon.post(f"{base}/s3/multipart", json={"filename": "c.bin", "metadata": {"size": 19 * MIB}})
        assert_problem(resp, 413, "LINK_BYTES_EXHAUSTED")
        resp = anon.get(f"{base}/s3/params", params={"filename": "d", "metadata[size]": str(19 * MIB)})
        assert_problem(resp, 413, "LINK_BYTES_EXHAUSTED")
        # an unknown link token
        assert_problem(
            anon.get("/links/uplnk_nothing/s3/multipart/x/1", params={"key": key}), 404, "NOT_FOUND"
        )
        # a revoked link: refused at once on this replica, for every route
        revoked = manager.delete(f"/upload-links/{link['id']}")
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked", revoked.text
        assert_problem(
            anon.get(f"{base}/s3/multipart/{uid}/1", params={"key": key}), 410, "UPLOAD_LINK_REVOKED"
        )
        resp = anon.post(f"{base}/s3/multipart", json={"filename": "e", "metadata": {"size": 1}})
        assert_problem(resp, 410, "UPLOAD_LINK_REVOKED")
        assert_problem(anon.get(base), 410, "UPLOAD_LINK_REVOKED")


def test_expired_link_is_refused(backend: Backend) -> None:
    with new_user(backend) as manager, anonymous(backend) as anon:
        log = new_log(manager)
        link = new_link(manager, log["id"])
        base = endpoint(link)
        created = anon.post(f"{base}/s3/multipart", json={"filename": "a", "metadata": {"size": 6 * MIB}})
        upload_id, key = created.json()["uploadId"], created.json()["key"]
        asyncio.run(expire_link(backend, link["id"]))
        deadline = time.monotonic() + 10  # the part route trusts its last check for a few seconds
        while True:
            resp = anon.get(f"{base}/s3/multipart/{quote(upload_id, safe='')}/1", params={"key": key})
            if resp.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # polling interval while waiting for the cached check to lapse
        assert_problem(resp, 410, "UPLOAD_LINK_EXPIRED")
        resp = anon.post(f"{base}/s3/multipart", json={"filename": "b", "metadata": {"size": 1}})
        assert_problem(resp, 410, "UPLOAD_LINK_EXPIRED")
        listed = manager.get(f"/logs/{log['id']}/upload-links").json()["items"]
        assert listed[0]["status"] == "expired"


def test_link_budgets_hold_under_concurrent_starts(backend: Backend) -> None:
    """max_files and max_bytes are kept by a compare-and-set: 16 concurrent starts of a link that
    allows 5 files: exactly 5 succeed, and the counters say so."""
    with new_user(backend) as manager:
        log = new_log(manager)
        link = new_link(manager, log["id"], max_files=5)
        base = endpoint(link)

        def start(i: int) -> int:
            with anonymous(backend) as anon:
                resp = anon.get(f"{base}/s3/params", params={"filename": f"f{i}", "metadata[size]": "10"})
                return resp.status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(start, range(16)))
        assert sorted(codes).count(200) == 5, codes
        assert set(codes) <= {200, 409}, codes
        listed = manager.get(f"/logs/{log['id']}/upload-links").json()["items"][0]
        assert (listed["files_used"], listed["bytes_used"], listed["status"]) == (5, 50, "used_up")
        bytes_link = new_link(manager, log["id"], max_bytes=100)

        def start_bytes(i: int) -> int:
            with anonymous(backend) as anon:
                resp = anon.get(
                    f"{endpoint(bytes_link)}/s3/params", params={"filename": f"g{i}", "metadata[size]": "30"}
                )
                return resp.status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(start_bytes, range(16)))
        assert codes.count(200) == 3 and set(codes) <= {200, 413}, codes


def test_an_aborted_link_upload_gives_its_share_back(backend: Backend) -> None:
    with new_user(backend) as manager, anonymous(backend) as anon:
        log = new_log(manager)
        link = new_link(manager, log["id"], max_files=1)
        base = endpoint(link)
        created = anon.post(
            f"{base}/s3/multipart", json={"filename": "a", "metadata": {"size": 6 * MIB}}
        ).json()
        uid = quote(created["uploadId"], safe="")
        resp = anon.post(f"{base}/s3/multipart", json={"filename": "b", "metadata": {"size": 6 * MIB}})
        assert_problem(resp, 409, "LINK_FILES_EXHAUSTED")
        assert anon.delete(f"{base}/s3/multipart/{uid}", params={"key": created["key"]}).status_code == 200
        assert anon.delete(f"{base}/s3/multipart/{uid}", params={"key": created["key"]}).status_code == 200
        listed = manager.get(f"/logs/{log['id']}/upload-links").json()["items"][0]
        assert (listed["files_used"], listed["bytes_used"]) == (0, 0)
        again = anon.post(f"{base}/s3/multipart", json={"filename": "b", "metadata": {"size": 6 * MIB}})
        assert again.status_code == 200, again.text


@pytest.mark.parametrize("dead", ["creating", "expiring"])
def test_a_link_upload_the_reaper_ends_gives_its_share_back(backend: Backend, dead: str) -> None:
    """A start through a link that died before the store's answer was recorded (forgotten by the
    reaper, its stray multipart upload swept), or an upload that expired: the link gets its share
    back."""
    with new_user(backend) as manager, anonymous(backend) as anon:
        log = new_log(manager)
        link = new_link(manager, log["id"], max_files=1)
        created = anon.post(
            f"{endpoint(link)}/s3/multipart", json={"filename": "a", "metadata": {"size": 6 * MIB}}
        ).json()
        upload_id = asyncio.run(upload_id_of_key(backend, created["key"]))
        report = asyncio.run(reap_a_dead_claim(backend, upload_id, dead))
        # A dead start is forgotten (its rows removed) and its key swept of the multipart upload it
        # made; an expiring upload is ended (expired), its multipart upload aborted by its id.
        if dead == "creating":
            assert (report.forgotten, report.swept, report.total(), report.errors) == (1, 1, 2, 0), report
        else:
            assert (report.expired, report.total(), report.errors) == (1, 1, 0), report
        assert asyncio.run(open_multipart_uploads(backend, created["key"])) == []
        row_status = asyncio.run(status_of_key(backend, created["key"]))
        assert row_status == (None if dead == "creating" else "expired"), row_status
        listed = manager.get(f"/logs/{log['id']}/upload-links").json()["items"][0]
        assert (listed["files_used"], listed["bytes_used"]) == (0, 0)
        again = anon.post(f"{endpoint(link)}/s3/multipart", json={"filename": "b", "metadata": {"size": 1}})
        assert again.status_code == 200, again.text


async def upload_id_of_key(backend: Backend, key: str) -> str:
    """The upload a key belongs to: the file's key, or a form upload's own (incoming) key."""
    incoming = FORM_POST.upload_id_of(key)
    if incoming is not None:
        return incoming
    async with backend_db(backend) as session:
        return (await session.exec(select(Upload.id).where(Upload.key == key))).one()


async def status_of_key(backend: Backend, key: str) -> str | None:
    """The status of the upload row on ``key``, ``None`` if there is none."""
    async with backend_db(backend) as session:
        return (await session.exec(select(Upload.status).where(Upload.key == key))).first()


async def open_multipart_uploads(backend: Backend, key: str) -> list[str]:
    async with store(backend) as checker:
        return await checker.list_multipart_uploads(key)


def test_links_are_for_managers(backend: Backend) -> None:
    with new_user(backend) as manager, new_user(backend) as contributor, anonymous(backend) as anon:
        log = new_log(manager)
        name = contributor.get("/me").json()["username"]
        assert (
            manager.put(f"/cases/{log['case_id']}/members/{name}", json={"role": "contributor"}).status_code
            == 200
        )
        assert_problem(
            contributor.post(f"/logs/{log['id']}/upload-links", json={"expires_in": 60}), 403, "FORBIDDEN"
        )
        with new_user(backend) as stranger:
            assert_problem(
                stranger.post(f"/logs/{log['id']}/upload-links", json={"expires_in": 60}), 404, "NOT_FOUND"
            )
            link = new_link(manager, log["id"])
            assert_problem(stranger.delete(f"/upload-links/{link['id']}"), 404, "NOT_FOUND")
        resp = manager.post(f"/logs/{log['id']}/upload-links", json={"expires_in": 10})
        assert_problem(resp, 400, "VALIDATION_ERROR")
        # the link's holder sees where it uploads, not the case
        assert set(anon.get(endpoint(link)).json()) == {"log_name", "expires_at", "files_left", "bytes_left"}


def test_uppy_plans_like_uppy_and_refuses_what_it_cannot_plan(backend: Backend) -> None:
    with new_user(backend) as manager, anonymous(backend) as anon:
        log = new_log(manager)
        base = endpoint(new_link(manager, log["id"]))
        resp = anon.post(f"{base}/s3/multipart", json={"filename": "a", "metadata": {}})
        body = assert_problem(resp, 400, "VALIDATION_ERROR")
        assert "metadata.size" in body["detail"]
        # a page whose getChunkSize says 6 MiB: planned in 6 MiB parts
        ok = anon.post(
            f"{base}/s3/multipart",
            json={"filename": "a", "metadata": {"size": 13 * MIB, "part_size": 6 * MIB}},
        )
        assert ok.status_code == 200, ok.text
        uid = quote(ok.json()["uploadId"], safe="")
        assert anon.get(f"{base}/s3/multipart/{uid}/3", params={"key": ok.json()["key"]}).status_code == 200
        assert_problem(
            anon.get(f"{base}/s3/multipart/{uid}/4", params={"key": ok.json()["key"]}),
            400,
            "VALIDATION_ERROR",
        )
        # chunks that are not a whole MiB above the 10,000-part floor cannot be planned: refused up front
        size = 60 * 1024 * MIB
        resp = anon.post(f"{base}/s3/multipart", json={"filename": "huge", "metadata": {"size": size}})
        body = assert_problem(resp, 400, "VALIDATION_ERROR")
        assert body["part_size"] % MIB == 0


@pytest.mark.parametrize("size", ["-1", "1.5", "abc", ""])
def test_bad_sizes_are_client_errors(backend: Backend, size: str) -> None:
    with new_user(backend) as manager, anonymous(backend) as anon:
        base = endpoint(new_link(manager, new_log(manager)["id"]))
        assert_problem(
            anon.get(f"{base}/s3/params", params={"filename": "a", "metadata[size]": size}),
            400,
            "VALIDATION_ERROR",
        )


def test_revocations_reach_the_part_signing_route_within_the_cache_ttl(backend: Backend) -> None:
    """The part route trusts a check for ``authorization_cache_ttl`` seconds (2): a sign-out, and a
    member removed from the case, are refused within that time (measured here)."""
    from tests.api.helpers import new_account, sign_in

    ttl = backend.settings.authorization_cache_ttl
    name, password = new_account(backend)
    signed_in = sign_in(backend, name, password)
    cookie = signed_in.cookies["upload_plane_session"]
    with (
        httpx.Client(
            base_url=backend.base_url, timeout=60, event_hooks={"response": [record_server_errors]}
        ) as page,
        new_user(backend) as manager,
    ):
        page.cookies.set("upload_plane_session", cookie)
        page.headers["Origin"] = backend.base_url
        log = new_log(manager)
        assert (
            manager.put(f"/cases/{log['case_id']}/members/{name}", json={"role": "contributor"}).status_code
            == 200
        )
        created = page.post(
            "/s3/multipart", json={"filename": "a", "metadata": {"size": 6 * MIB, "log_id": log["id"]}}
        )
        assert created.status_code == 200, created.text
        url = f"/s3/multipart/{quote(created.json()['uploadId'], safe='')}/1"
        key = {"key": created.json()["key"]}
        assert page.get(url, params=key).status_code == 200  # checked, and trusted for a while

        def refused_within(what: str) -> float:
            started = time.monotonic()
            while page.get(url, params=key).status_code == 200:
                assert time.monotonic() - started < ttl + 2, f"{what} still signing after {ttl + 2} s"
                time.sleep(0.05)  # polling interval while waiting for the refusal
            return time.monotonic() - started

        assert manager.delete(f"/cases/{log['case_id']}/members/{name}").status_code == 204
        assert refused_within("a removed member") <= ttl + 1
        assert_problem(page.get(url, params=key), 404, "NOT_FOUND")
        assert (
            manager.put(f"/cases/{log['case_id']}/members/{name}", json={"role": "contributor"}).status_code
            == 200
        )
        wait = time.monotonic() + ttl + 2
        while page.get(url, params=key).status_code != 200:
            assert time.monotonic() < wait
            time.sleep(0.05)  # polling interval while the refusal itself is not cached
        assert page.post("/api/v1/auth/logout", json={}).status_code in (200, 204)
        page.cookies.set("upload_plane_session", cookie)  # a copy of the cookie kept after sign-out
        assert refused_within("a signed-out session") <= ttl + 1
        assert_problem(page.get(url, params=key), 401, "UNAUTHENTICATED")
