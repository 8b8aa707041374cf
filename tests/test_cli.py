"""The `exporter` command as a real process: options, token handling, exit codes, signals."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard
from fakeapi import FakeServerHandle
from on_disk import read_records, read_summary, write_manifest
from runs import ROOT, TOKEN, cli, cli_env, spawn

from exporter.archive.writer import Archive, RunRequest
from exporter.cli import build_parser
from exporter.cli.export_config import read_token
from exporter.config import ArchiveSettings
from exporter.errors import UsageError

#: The `exporter` console script pip installed beside this interpreter (`.venv/bin/exporter`).
CONSOLE_SCRIPT = Path(sys.executable).parent / "exporter"


def export_args(manifest: Path | str, out: Path, url: str, *extra: str) -> list[str]:
    return ["export", str(manifest), "--base-url", url, "--out", str(out), "--rate", "0", *extra]


def _export_options() -> list[str]:
    """Every option of `exporter export`, from the parser itself (hidden ones excepted)."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    export = commands.choices["export"]
    return [
        max(action.option_strings, key=len)
        for action in export._actions
        if action.option_strings and action.help != argparse.SUPPRESS and action.dest != "help"
    ]


def test_help_documents_every_option() -> None:
    """`export --help` names every option of the parser, the token variable and every exit code."""
    result = cli("export", "--help")
    assert result.returncode == 0
    options = _export_options()
    assert {"--proxy", "--proxy-auth-file", "--ca-cert", "--client-key", "--token-file"} <= set(options)
    for option in (*options, "--no-progress", "EXPORTER_TOKEN", "HTTPS_PROXY", "NO_PROXY"):
        assert option in result.stdout, option
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130", "143"):
        assert f"\n  {code}" in result.stdout, code


def test_readme_options_table_lists_every_option() -> None:
    """Each option of the parser has a row in the README's options table."""
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `-")]
    for option in _export_options():
        assert any(f"`{option}" in row or f"/{option}" in row for row in rows), option


def test_all_exported_exits_0_and_quiet_prints_nothing(api: FakeServerHandle, tmp_path: Path) -> None:
    """A complete run exits 0; with --quiet it writes nothing at all to stdout or stderr."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b", "c"])
    result = cli(*export_args(manifest, tmp_path / "out", api.url, "--quiet"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert len(read_records(tmp_path / "out")) == 3


def test_partial_run_exits_1_with_a_closing_line(api: FakeServerHandle, tmp_path: Path) -> None:
    """Not-found and invalid ids make exit 1, and the closing line points at failed.ndjson."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "missing-1", "../x"])
    result = cli(*export_args(manifest, tmp_path / "out", api.url, "--no-progress"))
    assert result.returncode == 1
    assert "exported 1 recording to" in result.stderr
    assert "1 not found, 1 invalid" in result.stderr
    assert "failed.ndjson" in result.stderr


def test_missing_token_exits_2_saying_how(tmp_path: Path) -> None:
    """Without a token the command exits 2 with one line naming EXPORTER_TOKEN and --token-file."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    result = cli(*export_args(manifest, tmp_path / "out", "http://127.0.0.1:9"), env=cli_env(token=None))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "EXPORTER_TOKEN" in result.stderr
    assert "--token-file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_proxy_for_plain_http_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """--proxy with an http base URL would show the token to the proxy: exit 2, nothing created."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    result = cli(
        *export_args(manifest, tmp_path / "out", "http://127.0.0.1:9"), "--proxy", "http://127.0.0.1:3128"
    )
    assert result.returncode == 2
    assert "https --base-url only" in result.stderr
    assert not (tmp_path / "out").exists()


def test_token_on_the_command_line_is_refused(tmp_path: Path) -> None:
    """`--token VALUE` is refused (it would show in ps) and the value is not echoed back."""
    result = cli(
        *export_args("ids.txt", tmp_path / "out", "http://127.0.0.1:9"), "--token", "sekrit-value-99"
    )
    assert result.returncode == 2
    assert "command line" in result.stderr
    assert "sekrit-value-99" not in result.stderr + result.stdout


def test_token_file_works_and_token_never_shows(api: FakeServerHandle, tmp_path: Path) -> None:
    """--token-file supplies the token; it appears in no output and no archive file."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "missing-3"])
    result = cli(
        *export_args(manifest, tmp_path / "out", api.url, "--token-file", str(token_file), "-v"),
        env=cli_env(token=None),
    )
    assert result.returncode == 1
    assert TOKEN not in result.stdout + result.stderr
    for path in (tmp_path / "out").rglob("*"):
        assert TOKEN.encode() not in path.read_bytes()


def test_group_readable_token_file_warns(api: FakeServerHandle, tmp_path: Path) -> None:
    """A token file other users can read still works, with a warning to chmod it."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    result = cli(
        *export_args(manifest, tmp_path / "out", api.url, "--token-file", str(token_file)),
        env=cli_env(token=None),
    )
    assert result.returncode == 0
    assert "chmod 600" in result.stderr


def test_wrong_token_exits_3(api: FakeServerHandle, tmp_path: Path) -> None:
    """A refused token exits 3 after one request, with a message saying the token was refused."""
    manifest = write_manifest(tmp_path / "ids.txt", [f"r{i}" for i in range(100)])
    result = cli(
        *export_args(manifest, tmp_path / "out", api.url, "--concurrency", "1"), env=cli_env(token="nope-123")
    )
    assert result.returncode == 3
    assert "refused the token" in result.stderr
    assert "nope-123" not in result.stderr
    assert api.stats()["requests_total"] == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--base-url", "http://example.com"], "unencrypted"),
        (["--base-url", "ftp://x"], "http(s)"),
        (["--base-url", "https://[::1"], "not an http(s) URL"),
        (["--base-url", "https://[x]/"], "not an http(s) URL"),
        (["--base-url", "https://h:99999999"], "port"),
        (["--base-url", "https://h:abc"], "port"),
        (["--base-url", "https://h:\u0661\u0662"], "port"),
        (["--base-url", "https://h:0"], "port"),
        (["--concurrency", "0"], "at least 1"),
        (["--rate", "-1"], ">= 0"),
        (["--include", "nonsense"], "not one of"),
        (["--query", "novalue"], "KEY=VALUE"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    """Bad options exit 2 with a message that says what is accepted (a base URL urllib cannot take
    apart, or with a port no server listens on, too: never a traceback)."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    base = ["export", str(manifest), "--out", str(tmp_path / "out")]
    if "--base-url" not in args:
        base += ["--base-url", "http://127.0.0.1:9"]
    result = cli(*base, *args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--max-file-bytes", "9" * 400], "not a size"),
        (["--compress-batch", "9" * 400], "not a size"),
        (["--max-response-bytes", "9" * 400 + "MB"], "not a size"),
        (["--concurrency", "9" * 5000], "not a whole number"),
        (["--concurrency", "\u0663"], "not a whole number"),
        (["--concurrency", "100000"], "more than 10,000"),
        (["--max-requests", "\u00b2"], "not a whole number"),
        (["--rate", "\u0663"], "not a number"),
        (["--timeout", "9" * 400], "not a number"),
        (["--max-duration", "99999999d"], "at most 3650d"),
        (["--compress", "gzip", "--compress-level", "99"], "not a gzip level: 0 to 9"),
        (["--compress", "zstd", "--compress-level", "23"], "not a zstd level"),
        (["--compress-level", "9" * 50], "not a compression level"),
    ],
)
def test_numbers_are_ascii_digits_of_sane_size(tmp_path: Path, args: list[str], fragment: str) -> None:
    """Every number option takes ASCII digits of a sane length and range: a huge size (which float()
    turns into infinity), other scripts' digits, an impossible level all exit 2 with one short line
    that quotes at most the start of what was typed, never a traceback, and nothing is created."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    result = cli(*export_args(manifest, tmp_path / "out", "http://127.0.0.1:9", *args))
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()[-1]) < 300
    assert not (tmp_path / "out").exists()


def test_unreadable_manifests_exit_2_before_touching_the_archive(tmp_path: Path) -> None:
    """A missing manifest or a CSV without an id column exits 2 and creates no archive."""
    result = cli(*export_args(tmp_path / "nope.txt", tmp_path / "out", "http://127.0.0.1:9"))
    assert result.returncode == 2
    assert "cannot open manifest" in result.stderr
    csv = tmp_path / "ids.csv"
    csv.write_text("name,size\nx,1\n")
    result = cli(*export_args(csv, tmp_path / "out", "http://127.0.0.1:9"))
    assert result.returncode == 2
    assert "'id' column" in result.stderr
    assert not (tmp_path / "out").exists()


def test_stdin_manifest(api: FakeServerHandle, tmp_path: Path) -> None:
    """`-` reads the manifest from standard input."""
    result = cli(*export_args("-", tmp_path / "out", api.url), input=b"s1\ns2\n")
    assert result.returncode == 0, result.stderr
    assert sorted(r["id"] for r in read_records(tmp_path / "out")) == ["s1", "s2"]


def test_locked_archive_exits_4(api: FakeServerHandle, tmp_path: Path) -> None:
    """While another run holds the archive, a second one exits 4 saying so."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a"])
    holder = Archive.open(
        ArchiveSettings(out_dir=tmp_path / "out"),
        RunRequest(started_at="t", refetch=False, manifest="m", shard=None),
    )
    try:
        result = cli(*export_args(manifest, tmp_path / "out", api.url))
    finally:
        holder.close()
    assert result.returncode == 4
    assert "another exporter" in result.stderr


def test_python_dash_m_and_console_script_agree() -> None:
    """`python -m exporter --version` works, and says what the installed console script says."""
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("exporter ")
    script = subprocess.run(
        [str(CONSOLE_SCRIPT), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (script.returncode, script.stdout) == (0, result.stdout)


def test_offline_commands_load_neither_the_run_nor_the_network(api: FakeServerHandle, tmp_path: Path) -> None:
    """`status`, `verify`, `get`, `index` import no pipeline, transport, metrics, progress or asyncio."""
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "b"])
    out = tmp_path / "out"
    assert cli(*export_args(manifest, out, api.url)).returncode == 0
    heavy = (
        "exporter.pipeline", "exporter.transport", "exporter.metrics", "exporter.progress",
        "exporter.fetcher", "exporter.pacing", "asyncio", "tqdm", "prometheus_client",
    )  # fmt: skip
    for argv in (
        ["status", str(out)],
        ["verify", str(out)],
        ["get", str(out), "--id", "a"],
        ["index", str(out)],
    ):
        code = (
            "import sys; from exporter.cli import main; "
            f"rc = main({argv!r}); "
            f"print(rc, sorted(m for m in sys.modules if m.startswith({heavy!r})))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        assert done.stdout.splitlines()[-1] == "0 []", (argv, done.stdout[-300:], done.stderr)


def test_the_installed_console_script_exports_and_exits_with_the_runs_code(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """`exporter` as pip installed it (next to this Python) runs an export and exits with its code.

    Run from an empty directory, so the package comes from the install, not from the working tree.
    """
    assert os.access(CONSOLE_SCRIPT, os.X_OK), f"no console script at {CONSOLE_SCRIPT}: pip install -e ."
    manifest = write_manifest(tmp_path / "ids.txt", ["a", "missing-1"])
    out = tmp_path / "out"
    work = tmp_path / "empty"
    work.mkdir()
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), *export_args(manifest, out, api.url, "--no-progress")],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "exported 1 recording to" in result.stderr
    assert [r["id"] for r in read_records(out)] == ["a"]
    assert [json.loads(line)["reason"] for line in (out / "failed.ndjson").read_text().splitlines()] == [
        "not_found"
    ]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_resumes(
    api: FakeServerHandle, tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    """SIGINT/SIGTERM flush, checkpoint and write summary.json, exit 130/143; a rerun completes."""
    api.configure(latency_ms=20)
    ids = [f"rec-{i}" for i in range(400)]
    manifest = write_manifest(tmp_path / "ids.txt", ids)
    out = tmp_path / "out"
    process = spawn(*export_args(manifest, out, api.url, "--concurrency", "4"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and api.stats()["requests_total"] < 40:
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code, stderr
    summary = read_summary(out)
    assert summary["status"] == "interrupted"
    assert summary["exit_code"] == code
    done = summary["counts"]["exported"]
    assert 0 < done < len(ids)
    assert len(read_records(out)) == done
    api.configure(latency_ms=0)
    result = cli(*export_args(manifest, out, api.url))
    assert result.returncode == 0, result.stderr
    assert sorted(r["id"] for r in read_records(out)) == sorted(ids)
    last = [json.loads(x) for x in (out / "checkpoint.ndjson").read_text().splitlines() if '"t":"end"' in x]
    assert [e["status"] for e in last] == ["interrupted", "complete"]


def test_sigterm_writes_a_waiting_compressed_batch_at_once(api: FakeServerHandle, tmp_path: Path) -> None:
    """A compressed batch waiting for company (up to 5 s) is committed as soon as SIGTERM comes."""
    manifest = write_manifest(tmp_path / "ids.txt", [f"rec-{i}" for i in range(200)])
    out = tmp_path / "out"
    args = export_args(manifest, out, api.url, "--rate", "20", "--compress", "zstd")
    process = spawn(*args)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and api.stats()["requests_total"] < 15:
        time.sleep(0.02)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    # Well under the 5 s a batch may wait; the margin is for a busy machine.
    assert time.monotonic() - signalled < 3.5, "the run waited for its batch instead of stopping"
    assert process.returncode == 143, stderr
    summary = read_summary(out)
    (records_file,) = out.glob("records-*.zst")
    data = (
        zstandard.ZstdDecompressor()
        .stream_reader(io.BytesIO(records_file.read_bytes()), read_across_frames=True)
        .read()
    )
    assert summary["counts"]["exported"] == data.count(b"\n") >= 15


@pytest.mark.parametrize(
    ("token", "fragment"),
    [("ab cd", "whitespace or control"), ("tök-1", "non-ASCII"), ("a\x7fb", "whitespace or control")],
)
def test_tokens_no_header_can_carry_are_refused_without_echo(token: str, fragment: str) -> None:
    """A token that could not go into an HTTP header is a usage error that does not repeat it."""
    with pytest.raises(UsageError, match=fragment) as caught:
        read_token(None, {"EXPORTER_TOKEN": token})
    assert token not in str(caught.value)


def test_a_manifest_named_in_bytes_that_are_not_utf8_is_exported(
    api: FakeServerHandle, tmp_path: Path
) -> None:
    """The manifest's name goes into the checkpoint and summary.json, which hold UTF-8 only: a byte
    that is not UTF-8 is written there as `\\xff`, and the run exports (not a traceback and exit 1)."""
    manifest = write_manifest(tmp_path / os.fsdecode(b"ids-\xff.txt"), ["a", "b"])
    out = tmp_path / "out"
    result = cli(*export_args(manifest, out, api.url))
    assert result.returncode == 0, result.stderr
    assert len(read_records(out)) == 2
    assert read_summary(out)["manifest"] == str(tmp_path / "ids-\\xff.txt")
    run = json.loads((out / "checkpoint.ndjson").read_bytes().splitlines()[0])
    assert run["manifest"] == str(tmp_path / "ids-\\xff.txt")
    status = cli("status", str(out), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["runs"][0]["manifest"] == str(tmp_path / "ids-\\xff.txt")
