"""download_file against file:// URLs written by the test."""

from __future__ import annotations

import hashlib

import pytest

from fitnets.data import download_file
from fitnets.data.download import fetch
from fitnets.errors import FitnetsError

PAYLOAD = bytes(range(256)) * 5000  # > one 1 MiB chunk, so streaming really loops


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "server" / "blob.bin"
    p.parent.mkdir()
    p.write_bytes(PAYLOAD)
    return p


def test_download_verifies_md5_and_sha256(tmp_path, src):
    dest = tmp_path / "out" / "blob.bin"
    got = download_file(src.as_uri(), dest, md5=hashlib.md5(PAYLOAD).hexdigest(),
                        sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["blob.bin"]  # no temp left


@pytest.mark.parametrize("kind", ["md5", "sha256"])
def test_checksum_mismatch_deletes_and_explains(tmp_path, src, kind):
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(FitnetsError) as e:
        download_file(src.as_uri(), dest, **{kind: "ab" * (16 if kind == "md5" else 32)})
    msg = str(e.value)
    assert "expected" in msg and "ab" * 16 in msg and "got" in msg and str(dest) in msg
    assert list(dest.parent.iterdir()) == []  # neither dest nor a temp file


def test_unreachable_url(tmp_path):
    with pytest.raises(FitnetsError, match="Could not download"):
        download_file((tmp_path / "missing").as_uri(), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_fetch_falls_through_mirrors(tmp_path, src):
    dead = (tmp_path / "dead" / "blob.bin").as_uri()
    dest = fetch([dead, src.as_uri()], tmp_path / "o" / "blob.bin",
                 md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(FitnetsError, match="All mirrors failed"):
        fetch([dead], tmp_path / "o2" / "blob.bin", progress=False)
