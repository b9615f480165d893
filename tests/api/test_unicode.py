"""Unicode everywhere a client can put text, on both backends. The real tier's MariaDB runs with
latin1 defaults and its test database is created without a character set (tests/services.py), as
many installed servers are: every value must round-trip, or answer 400/404 — never a 5xx."""

from __future__ import annotations

import os
import secrets
from urllib.parse import quote

import httpx
import pytest

from tests.api.helpers import (
    admin,
    assert_problem,
    client,
    complete,
    download,
    login,
    new_user,
    put_parts,
    start_upload,
)
from tests.conftest import ADMIN_PASSWORD, Backend

TEXTS = {
    "latin": "Ermittlung Müller – Zeugenaussage ß",
    "cyrillic": "Расследование Иванов",
    "cjk": "证据 調査 증거",
    "arabic-rtl-override": "تحقيق \u202egpj.exe",
    "hebrew": "חקירה",
    "emoji": "Ermittlung Müller 证据 📹",
    "combining": "Cafe\u0301",
    "astral": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈",
    "zero-width": "a\u200bb\u200dc\ufeff",
}
PATH_IDS = ["ł", "Ж", "证据", "📹", "\u202e", "ا", "é" * 40, "%00", "1' OR '1'='1"]


@pytest.mark.parametrize("name", list(TEXTS))
def test_cases_logs_and_filenames_round_trip(backend: Backend, http: httpx.Client, name: str) -> None:
    text = TEXTS[name]
    with new_user(backend) as api:
        case = api.post("/cases", json={"title": text, "reference": text[:100], "description": text})
        assert case.status_code == 201, case.text
        got = api.get(f"/cases/{case.json()['id']}").json()
        assert (got["title"], got["reference"], got["description"]) == (text, text[:100], text)
        patched = api.patch(f"/cases/{case.json()['id']}", json={"title": text[::-1]})
        assert patched.status_code == 200 and patched.json()["title"] == text[::-1]

        log = api.post(f"/cases/{case.json()['id']}/logs", json={"name": text, "description": text})
        assert log.status_code == 201, log.text
        assert api.get(f"/logs/{log.json()['id']}").json()["name"] == text
        assert_problem(api.post(f"/cases/{case.json()['id']}/logs", json={"name": text}), 409, "CONFLICT")

        data = os.urandom(64)
        upload = start_upload(api, log.json()["id"], data, filename=f"{text}.mp4")
        assert upload["filename"] == f"{text}.mp4"
        put_parts(http, api, upload, data, [1])
        done = complete(api, upload["id"])
        assert done.status_code == 200, done.text
        assert done.json()["filename"] == f"{text}.mp4"
        assert download(http, api, upload["file_id"]) == data
        listed = api.get(f"/logs/{log.json()['id']}/files").json()["items"]
        assert [f["filename"] for f in listed] == [f"{text}.mp4"]


@pytest.mark.parametrize("path_id", PATH_IDS)
def test_unicode_and_hostile_path_ids_are_404(backend: Backend, path_id: str) -> None:
    ident = quote(path_id, safe="")
    with new_user(backend) as api:
        for method, path in [
            ("GET", f"/cases/{ident}"),
            ("PATCH", f"/cases/{ident}"),
            ("GET", f"/cases/{ident}/logs"),
            ("POST", f"/cases/{ident}/logs"),
            ("GET", f"/logs/{ident}"),
            ("GET", f"/logs/{ident}/files"),
            ("POST", f"/logs/{ident}/uploads"),
            ("GET", f"/files/{ident}"),
            ("GET", f"/files/{ident}/download"),
            ("DELETE", f"/files/{ident}"),
            ("GET", f"/uploads/{ident}"),
            ("POST", f"/uploads/{ident}/parts"),
            ("POST", f"/uploads/{ident}/complete"),
            ("DELETE", f"/uploads/{ident}"),
        ]:
            body = {
                "POST": {"name": "x", "filename": "a", "size": 1, "part_numbers": [1]},
                "PATCH": {"title": "x"},
            }.get(method)
            if path.endswith("/logs") and method == "POST":
                body = {"name": "x"}
            elif path.endswith("/uploads"):
                body = {"filename": "a", "size": 1}
            elif path.endswith("/parts"):
                body = {"part_numbers": [1]}
            elif path.endswith("/complete"):
                body = {}
            resp = api.request(method, path, json=body)
            assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
        for params in ({"log_id": path_id}, {"status": "uploading", "log_id": path_id}):
            resp = api.get("/uploads", params=params)
            assert resp.status_code == 200 and resp.json()["items"] == [], resp.text
        assert_problem(api.get("/uploads", params={"status": path_id}), 400, "VALIDATION_ERROR")
        assert_problem(api.get("/cases", params={"cursor": path_id}), 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("username", "other_spellings"),
    [
        ("łukasz", ["ŁUKASZ", "Łukasz"]),
        ("иван", ["ИВАН", "Иван"]),
        ("证据", []),
        ("محمد", []),
        ("ﬁona", ["fiona", "FIONA"]),  # a ligature: NFKC makes it "fiona"
    ],
)
def test_unicode_usernames_are_one_user_however_spelled(
    backend: Backend, username: str, other_spellings: list[str]
) -> None:
    suffix = secrets.token_hex(3)
    password = secrets.token_urlsafe(12)
    with admin(backend) as adm:
        created = adm.post("/users", json={"username": f"{username}{suffix}", "password": password})
        assert created.status_code == 201, created.text
        stored = created.json()["username"]
        for spelling in other_spellings:
            dup = adm.post("/users", json={"username": f"{spelling}{suffix}", "password": password})
            assert_problem(dup, 409, "CONFLICT")
    for spelling in [username, *other_spellings]:
        for padded in (f"{spelling}{suffix}", f" {spelling}{suffix}\t"):
            with login(backend, padded, password) as api:
                assert api.get("/me").json()["username"] == stored


@pytest.mark.parametrize(
    "username", ["📹cam", "a b", "tab\there", "\u202eevil", "zero\u200bwidth", "", "   "]
)
def test_unfit_usernames_are_400(backend: Backend, username: str) -> None:
    with admin(backend) as adm:
        resp = adm.post("/users", json={"username": username, "password": "long-enough-pw"})
        assert_problem(resp, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("username", ["ł", "Ж", "证据", "📹", "\u202e", "admin\x00", "é" * 150])
def test_logins_with_unknown_unicode_names_are_401(backend: Backend, username: str) -> None:
    with client(backend) as anon:
        resp = anon.post("/auth/login", json={"username": username, "password": "whatever-password"})
        assert_problem(resp, 401, "UNAUTHENTICATED")


def test_admin_is_one_user_however_spelled(backend: Backend) -> None:
    with admin(backend) as adm:
        me = adm.get("/me").json()
        assert_problem(adm.post("/users", json={"username": "ADMIN", "password": "x" * 12}), 409, "CONFLICT")
    for spelling in ["Admin", "ADMIN", "admin ", " admin"]:
        with login(backend, spelling, ADMIN_PASSWORD) as api:
            assert api.get("/me").json() == me
    with client(backend) as anon:
        wrong = anon.post("/auth/login", json={"username": "Admin", "password": "wrong-password"})
        assert_problem(wrong, 401, "UNAUTHENTICATED")


def test_a_case_reference_taken_by_someone_else_is_no_secret(backend: Backend) -> None:
    reference = f"2026-{secrets.token_hex(3)}"
    with new_user(backend) as first, new_user(backend) as second:
        mine = first.post("/cases", json={"title": "a", "reference": reference})
        assert mine.status_code == 201
        # Another user's case with the same reference neither blocks nor reveals anything.
        theirs = second.post("/cases", json={"title": "b", "reference": reference})
        assert theirs.status_code == 201, theirs.text
        clash = first.post("/cases", json={"title": "c", "reference": reference})
        assert_problem(clash, 409, "CONFLICT")
        other = second.post("/cases", json={"title": "d"}).json()
        renamed = second.patch(f"/cases/{other['id']}", json={"reference": reference})
        assert_problem(renamed, 409, "CONFLICT")
        assert reference in renamed.json()["detail"]  # the caller's own case: fine to name
