"""Inputs found by fuzzing the API: each gets a 4xx problem+json, never a 5xx."""

from __future__ import annotations

import base64
import hashlib
import os
import re

import httpx
import pytest

from tests.api.helpers import (
    MIB,
    admin,
    assert_problem,
    client,
    complete,
    download,
    new_log,
    new_user,
    put_parts,
    start_upload,
    upload_file,
)
from tests.conftest import Backend


@pytest.mark.parametrize("key", ["²", "\u0661", "01", "0", "1" * 5000, "10001x"])
def test_checksum_keys_must_be_plain_part_numbers(backend: Backend, key: str) -> None:
    with new_user(backend) as api:
        upload = start_upload(api, new_log(api)["id"], b"abc")
        body = {"part_numbers": [1], "checksums_sha256": {key: base64.b64encode(b"\0" * 32).decode()}}
        assert_problem(api.post(f"/uploads/{upload['id']}/parts", json=body), 400, "VALIDATION_ERROR")


def test_deeply_nested_json_is_400_even_without_a_token(backend: Backend) -> None:
    body = "[" * 5000 + "]" * 5000
    with client(backend) as anon:
        resp = anon.post("/auth/login", content=body, headers={"Content-Type": "application/json"})
    assert_problem(resp, 400, "VALIDATION_ERROR")


UNDECODABLE = [
    b'{"username":"\xff","password":"x"}',
    b'{"title":"\xc3\x28"}',
    b'{"filename":"\xed\xa0\x80","size":1}',  # an encoded surrogate
    b'{"name":"\xf8\x88\x80\x80\x80"}',
    b"\xfe\xff\x00{\x00}",  # UTF-16 with a byte-order mark
]


@pytest.mark.parametrize("body", UNDECODABLE, ids=range(len(UNDECODABLE)))
def test_bodies_that_are_not_utf8_are_400_on_every_json_route(backend: Backend, body: bytes) -> None:
    with admin(backend) as api:  # an admin passes every route's guard, so each body is read
        token = api.headers["Authorization"]
        link = api.post(f"/logs/{new_log(api)['id']}/upload-links", json={"expires_in": 3600}).json()
    doc = httpx.get(f"{backend.base_url}/schema/openapi.json").json()
    checked = 0
    with client(backend) as anon:
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if "requestBody" not in op:
                    continue
                path = path.replace("{token}", link["token"])  # a link's routes check it first
                url = backend.base_url + re.sub(r"\{[^}]+\}", "01a20000-0000-7000-8000-000000000000", path)
                resp = anon.request(
                    method.upper(),
                    url,
                    content=body,
                    headers={"Authorization": token, "Content-Type": "application/json"},
                )
                assert resp.status_code == 400, (method, path, resp.status_code, resp.text)
                assert_problem(resp, 400, "VALIDATION_ERROR")
                checked += 1
    assert checked >= 8


@pytest.mark.parametrize(
    "content_type",
    [
        "a/b\n;c=d",
        "a/b\r\n",
        "text/plain;\x0bq=1",
        "中文/中文",
        "a/b c",
        'text/plain; name="证据"',
        'video/mp4; title="Müller"',
        'a/b; x="\x7f"',
    ],
)
def test_content_types_outside_the_media_type_grammar_are_400(backend: Backend, content_type: str) -> None:
    with new_user(backend) as api:
        body = {"filename": "f", "size": 1, "content_type": content_type}
        assert_problem(api.post(f"/logs/{new_log(api)['id']}/uploads", json=body), 400, "VALIDATION_ERROR")


def test_parameterised_content_types_are_accepted(backend: Backend) -> None:
    with new_user(backend) as api:
        for content_type in ["text/plain; charset=utf-8", 'multipart/mixed; boundary="a b"', "video/mp4"]:
            body = {"filename": "f", "size": 1, "content_type": content_type}
            resp = api.post(f"/logs/{new_log(api)['id']}/uploads", json=body)
            assert resp.status_code == 201, (content_type, resp.text)
            assert resp.json()["content_type"] == content_type


def test_a_very_long_name_still_downloads(backend: Backend, http: httpx.Client) -> None:
    name = "é" * 15_996 + ".mp4"  # the longest name the API accepts
    with new_user(backend) as api:
        file = upload_file(http, api, new_log(api)["id"], b"data", filename=name)
        assert file["filename"] == name
        resp = api.get(f"/files/{file['id']}/download")
        assert resp.status_code == 307
        assert len(resp.headers["location"]) < 4096
        got = http.get(resp.headers["location"])
        assert got.content == b"data"
        assert got.headers["content-disposition"].endswith(".mp4")


def test_checksum_signed_parts_upload_and_complete(backend: Backend, http: httpx.Client) -> None:
    """The URL signs x-amz-checksum-sha256; the right bytes go through on either store. MinIO also
    refuses bytes that do not match the signed checksum (moto does not check it)."""
    data = os.urandom(5 * MIB + 100)
    with new_user(backend) as api:
        upload = start_upload(api, new_log(api)["id"], data, part_size=5 * MIB)
        parts = [data[: 5 * MIB], data[5 * MIB :]]
        sums = {str(n): base64.b64encode(hashlib.sha256(p).digest()).decode() for n, p in enumerate(parts, 1)}
        resp = api.post(
            f"/uploads/{upload['id']}/parts", json={"part_numbers": [1, 2], "checksums_sha256": sums}
        )
        assert resp.status_code == 200, resp.text
        signed = {p["part_number"]: p for p in resp.json()["parts"]}
        assert signed[2]["headers"]["x-amz-checksum-sha256"] == sums["2"]
        assert "x-amz-checksum-sha256" in signed[2]["url"]
        if backend.name == "real":
            altered = bytes([parts[1][0] ^ 1]) + parts[1][1:]
            refused = http.put(signed[2]["url"], content=altered, headers=signed[2]["headers"])
            assert refused.status_code == 400, refused.text
        for n in (1, 2):
            put = http.put(signed[n]["url"], content=parts[n - 1], headers=signed[n]["headers"])
            assert put.status_code == 200, put.text
        done = complete(api, upload["id"])
        assert done.status_code == 200, done.text
        assert download(http, api, done.json()["id"]) == data


def test_openapi_documents_problem_details(backend: Backend) -> None:
    doc = httpx.get(f"{backend.base_url}/schema/openapi.json").json()
    complete_op = doc["paths"]["/api/v1/uploads/{upload_id}/complete"]["post"]
    for status in ("400", "401", "404", "409", "410", "503"):
        content = complete_op["responses"][status]["content"]
        assert list(content) == ["application/problem+json"], (status, content)
    assert "Problem" in doc["components"]["schemas"]
    assert not doc["paths"]["/api/v1/auth/login"]["post"].get("security")
    assert "307" in doc["paths"]["/api/v1/files/{file_id}/download"]["get"]["responses"]


def test_parts_can_be_signed_and_sent_again_while_open(backend: Backend, http: httpx.Client) -> None:
    """Signing twice (e.g. after URL expiry) keeps working while the upload is open."""
    data = os.urandom(10)
    with new_user(backend) as api:
        upload = start_upload(api, new_log(api)["id"], data)
        put_parts(http, api, upload, data, [1])
        put_parts(http, api, upload, data, [1])  # re-signed and re-sent: the store keeps the last
        assert complete(api, upload["id"]).status_code == 200
