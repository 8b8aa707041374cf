"""The archive directory is hostile ground: nothing is ever written through a link, a hard link or a FIFO
planted in it, nor into a directory another user owns or everyone may write to; every OSError is exit 4.

Each test plants something, runs the exporter as a user would (`exporter.cli.main`, or a real
process where it could hang or needs a mount namespace) and checks the file outside the archive
byte for byte and mode for mode.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fakeapi import FakeServerHandle
from on_disk import read_records, write_manifest
from runs import ROOT, TOKEN, cli, cli_env

from exporter.cli import main

PRECIOUS = b"precious bytes outside the archive\n"


def export_args(manifest: Path, out: Path, url: str, *extra: str) -> list[str]:
    base = ["export", str(manifest), "--base-url", url, "--out", str(out)]
    return [*base, "--rate", "0", "--no-progress", *extra]


@pytest.fixture
def run(
    api: FakeServerHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> RunExport:
    monkeypatch.setenv("EXPORTER_TOKEN", TOKEN)
    return RunExport(api.url, tmp_path, capsys)


class RunExport:
    """`exporter export` in this process over a manifest of `ids`; returns (exit code, stderr)."""

    def __init__(self, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.capsys = capsys

    def __call__(self, out: Path, ids: list[str], *extra: str) -> tuple[int, str]:
        manifest = write_manifest(self.tmp_path / "ids.txt", ids)
        self.capsys.readouterr()
        code = main(export_args(manifest, out, self.url, *extra))
        return code, self.capsys.readouterr().err


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the archive, mode 0644, that no run may change."""
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(PRECIOUS)
    path.chmod(0o644)
    return path


def assert_untouched(path: Path, data: bytes = PRECIOUS, mode: int = 0o644) -> None:
    st = path.stat()
    assert (path.read_bytes(), stat.S_IMODE(st.st_mode)) == (data, mode)


def fresh_out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    return out


def one_line(stderr: str) -> str:
    """The single line the run wrote: no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


# -- links planted where the archive's files go ----------------------------------


@pytest.mark.parametrize(
    "name",
    [
        ".lock",
        ".failed.partial",
        "failed.ndjson.tmp",
        "summary.json.tmp",
        "checkpoint.ndjson",
        "failed.ndjson",
        "summary.json",
        ".superseding",
    ],
)
def test_symlink_in_a_new_archive_is_refused(run: RunExport, tmp_path: Path, victim: Path, name: str) -> None:
    """A link planted in an empty --out is refused with exit 4, named, and nothing is written through it."""
    out = fresh_out(tmp_path)
    (out / name).symlink_to(victim)
    code, err = run(out, ["a", "b"])
    assert code == 4
    assert f"{out / name} is a symbolic link" in one_line(err)
    assert_untouched(victim)
    assert not (out / "checkpoint.ndjson").exists() or name == "checkpoint.ndjson"
    assert not list(out.glob("records-*"))


@pytest.mark.parametrize("name", ["checkpoint.ndjson", "records-00001.ndjson", "failed.ndjson", ".lock"])
def test_symlink_in_an_existing_archive_is_refused(
    run: RunExport, tmp_path: Path, victim: Path, name: str
) -> None:
    """On resume, a file swapped for a link to a copy of itself is refused; the copy is not appended to."""
    out = tmp_path / "out"
    assert run(out, ["a", "b", "missing-1"])[0] == 1
    copy = (out / name).read_bytes()
    victim.write_bytes(copy)
    (out / name).unlink()
    (out / name).symlink_to(victim)
    checkpoint_before = (out / "checkpoint.ndjson").read_bytes() if name != "checkpoint.ndjson" else b""
    code, err = run(out, ["a", "b", "c", "d"])
    assert code == 4
    assert f"{out / name} is a symbolic link" in one_line(err)
    assert_untouched(victim, copy)
    if checkpoint_before:
        assert (out / "checkpoint.ndjson").read_bytes() == checkpoint_before


def test_symlinked_superseded_dir_is_refused(run: RunExport, tmp_path: Path) -> None:
    """`superseded/` as a link to a directory elsewhere: --refetch refuses to move the archive there."""
    out = tmp_path / "out"
    assert run(out, ["a"])[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "superseded").symlink_to(elsewhere)
    code, err = run(out, ["a"], "--refetch")
    assert code == 4
    assert f"{out / 'superseded'} is a symbolic link, not a directory" in one_line(err)
    assert list(elsewhere.iterdir()) == []
    assert [r["id"] for r in read_records(out)] == ["a"]


def test_supersede_marker_cannot_send_files_out_of_the_archive(run: RunExport, tmp_path: Path) -> None:
    """A `.superseding` naming a directory outside superseded/ is refused: no file is moved there."""
    out = tmp_path / "out"
    assert run(out, ["a"])[0] == 0
    for target in (tmp_path / "elsewhere", Path("superseded/../../elsewhere")):
        (tmp_path / "elsewhere").mkdir(exist_ok=True)
        (out / ".superseding").write_text(f"{target}\n")
        code, err = run(out, ["a", "b"])
        assert code == 4
        assert ".superseding names" in one_line(err)
        assert list((tmp_path / "elsewhere").iterdir()) == []
        assert [r["id"] for r in read_records(out)] == ["a"]


# -- hard links and FIFOs ------------------------------------------------------------


@pytest.mark.parametrize("name", ["checkpoint.ndjson", "records-00001.ndjson", ".lock"])
def test_hard_linked_file_written_in_place_is_refused(
    run: RunExport, tmp_path: Path, victim: Path, name: str
) -> None:
    """A file the exporter appends to must have no other name: a hard link elsewhere would be changed too."""
    out = tmp_path / "out"
    assert run(out, ["a"])[0] == 0
    victim.unlink()
    os.link(out / name, victim)
    before = victim.read_bytes()
    code, err = run(out, ["a", "b"])
    assert code == 4
    assert f"{out / name} has 2 hard links" in one_line(err)
    assert victim.read_bytes() == before


@pytest.mark.parametrize("name", ["checkpoint.ndjson", "failed.ndjson", "summary.json.tmp"])
def test_fifo_is_refused_without_blocking(api: FakeServerHandle, tmp_path: Path, name: str) -> None:
    """A FIFO where a file goes is refused at once (opening it to read would wait for a writer for ever)."""
    out = fresh_out(tmp_path)
    os.mkfifo(out / name)
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    result = cli(*export_args(manifest, out, api.url), timeout=30)
    assert result.returncode == 4
    assert f"{out / name} is a FIFO, not a regular file" in one_line(result.stderr)


# -- the directory itself ----------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_out_owned_by_another_user_is_refused(run: RunExport, tmp_path: Path) -> None:
    """An existing --out that another user owns is refused (exit 4) before anything is created in it."""
    out = fresh_out(tmp_path)
    os.chown(out, 65534, 65534)
    code, err = run(out, ["a"])
    assert code == 4
    assert f"{out} belongs to another user (uid 65534" in one_line(err)
    assert list(out.iterdir()) == []


def test_world_writable_out_is_refused_group_writable_warned(run: RunExport, tmp_path: Path) -> None:
    """--out writable by everyone is refused; by its group (a Kubernetes fsGroup volume) only warned."""
    out = fresh_out(tmp_path)
    out.chmod(0o777)
    code, err = run(out, ["a"])
    assert code == 4
    assert f"{out} is writable by every user (mode 0777)" in one_line(err)
    assert list(out.iterdir()) == []
    out.chmod(0o2770)
    code, err = run(out, ["a"])
    assert code == 0
    assert f"{out} is writable by its group" in err
    assert [r["id"] for r in read_records(out)] == ["a"]


def test_out_may_be_a_symlink_to_a_directory_that_passes(run: RunExport, tmp_path: Path) -> None:
    """--out itself may be a link; the directory it leads to is held to the same rule."""
    real = fresh_out(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert run(link, ["a"])[0] == 0
    assert [r["id"] for r in read_records(real)] == ["a"]
    real.chmod(0o777)
    code, err = run(link, ["a", "b"])
    assert code == 4
    assert "writable by every user" in one_line(err)


def test_new_directories_are_private_whatever_the_umask(run: RunExport, tmp_path: Path) -> None:
    """Directories the exporter creates are 0700 even under a umask that would narrow them."""
    old = os.umask(0o277)
    try:
        code, _ = run(tmp_path / "new" / "out", ["a"])
    finally:
        os.umask(old)
    assert code == 0
    for path in (tmp_path / "new", tmp_path / "new" / "out"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


# -- OSErrors -----------------------------------------------------------------------


def test_directory_where_a_file_goes_is_exit_4_in_one_line(run: RunExport, tmp_path: Path) -> None:
    """`.lock` as a directory (EISDIR on open) ends in one line and exit 4, not a traceback and exit 1."""
    out = fresh_out(tmp_path)
    (out / ".lock").mkdir()
    code, err = run(out, ["a"])
    assert code == 4
    assert f"{out / '.lock'} is a directory, not a regular file" in one_line(err)


def _in_mount_namespace(script: str, *args: str) -> list[str]:
    """A command running `script` (sh) in a new user and mount namespace, where mounts need no privilege."""
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-ec", script, "sh", *args]


def _namespaces_work(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    if shutil.which("unshare") is None:
        return False
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && ! touch "$1/x" 2>/dev/null'
    done = subprocess.run(_in_mount_namespace(script, str(probe)), capture_output=True, timeout=30)
    return done.returncode == 0


def test_read_only_out_is_exit_4_in_one_line(api: FakeServerHandle, tmp_path: Path) -> None:
    """--out on a read-only mount: one line naming the file and the cause, exit 4 (was a traceback, exit 1).

    A read-only bind mount in a user namespace refuses root's writes too (chmod would not).
    """
    if not _namespaces_work(tmp_path):
        pytest.skip("unshare cannot make a read-only bind mount here")
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b"])
    for existing in (False, True):
        out = tmp_path / f"out-{existing}"
        if existing:
            assert cli(*export_args(manifest, out, api.url)).returncode == 0
        else:
            out.mkdir(mode=0o700)
        before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
        script = 'mount --bind "$1" "$1"; mount -o remount,ro,bind "$1"; shift; exec "$@"'
        exporter = [sys.executable, "-m", "exporter", *export_args(manifest, out, api.url)]
        command = _in_mount_namespace(script, str(out), *exporter)
        done = subprocess.run(command, capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=60)
        assert done.returncode == 4, done.stderr
        line = one_line(done.stderr)
        assert f"{out / '.lock'}: Read-only file system" in line, line
        assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before


# -- verify and status -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["records-00001.ndjson", "checkpoint.ndjson", "summary.json", "failed.ndjson"]
)
def test_verify_reports_a_link_instead_of_reading_it(
    run: RunExport, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link to a faithful copy is still a problem for verify: it reports the link and does not read it."""
    out = tmp_path / "out"
    assert run(out, ["a", "b", "missing-1"])[0] == 1
    copy = tmp_path / "copy"
    shutil.copyfile(out / name, copy)
    (out / name).unlink()
    (out / name).symlink_to(copy)
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"{out / name}: is a symbolic link, not a regular file: not read" in printed


def test_status_refuses_a_linked_checkpoint_and_lists_other_links(
    run: RunExport, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status exits 4 naming a linked checkpoint; a linked records file is listed as refused, not read."""
    out = tmp_path / "out"
    assert run(out, ["a"])[0] == 0
    records = out / "records-00001.ndjson"
    copy = tmp_path / "copy"
    shutil.copyfile(records, copy)
    records.unlink()
    records.symlink_to(copy)
    assert main(["status", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["refused"] == [
        {"name": "records-00001.ndjson", "problem": "is a symbolic link, not a regular file"}
    ]
    assert shown["files"][0]["disk_bytes"] is None
    ckpt = out / "checkpoint.ndjson"
    shutil.copyfile(ckpt, copy)
    ckpt.unlink()
    ckpt.symlink_to(copy)
    assert main(["status", str(out)]) == 4
    assert f"{ckpt} is a symbolic link" in capsys.readouterr().err


def test_status_and_verify_do_not_block_on_a_fifo(api: FakeServerHandle, tmp_path: Path) -> None:
    """A FIFO as failed.ndjson is reported by status and verify at once, never opened."""
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    assert cli(*export_args(manifest, out, api.url)).returncode == 0
    (out / "failed.ndjson").unlink()
    os.mkfifo(out / "failed.ndjson")
    status = cli("status", str(out), timeout=30)
    assert status.returncode == 0
    assert "REFUSED failed.ndjson is a FIFO" in status.stdout
    verify = cli("verify", str(out), timeout=30)
    assert verify.returncode == 1
    assert "failed.ndjson: is a FIFO, not a regular file" in verify.stdout
