"""Backups with the real pg_dump and pg_restore: restorable, verified, pruned with care, drilled."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.backups import offsite
from shared.backups.engine import take_backup, verify_archive
from shared.backups.files import scratch_name
from shared.backups.restore import drill, restore_backup
from shared.backups.retention import prune
from shared.backups.tools import BackupError, PgTools, sha256_of
from shared.core.preflight import offsite_encryption_problems
from shared.core.settings import BackupSettings, Settings
from shared.inbound.payload import InboundPayload
from shared.inbound.store import store_message
from tests.support.fake_tools import pg_dump_as_a_role_that_does_not_exist, real_program, wrapper
from tests.support.processes import ROOT
from tests.support.seed import COMPANY

MOSCOW = ZoneInfo("Europe/Moscow")
# Beside this test process's own database (tests/support/test_services.py), so test processes never share it.
RESTORED = conninfo_to_dict(os.environ["DATABASE_URL"])["dbname"].removesuffix("_test") + "_restored_test"


@pytest.fixture
def salon(salon: psycopg.Connection, settings: Settings) -> Iterator[psycopg.Connection]:
    """The seed salon with 25 chats' messages to back up; the restore target dropped afterwards."""
    for n in range(25):
        store_message(
            InboundPayload(
                company_id=COMPANY,
                chat_id=f"+7911000{n:04d}",
                gateway_message_id=f"w{n}",
                text=f"сообщение {n}",
                sent_at=datetime(2026, 11, 1, tzinfo=MOSCOW),
            )
        )
    yield salon
    with psycopg.connect(make_conninfo(settings.database_conninfo, dbname="postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(RESTORED)))


@pytest.fixture
def passphrase(tmp_path: Path) -> Path:
    """The off-site passphrase file, readable by its owner only (as `fleet check` wants it)."""
    path = tmp_path / "offsite-passphrase"
    path.write_text("correct horse battery staple\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def backup_settings(tmp_path: Path, passphrase: Path) -> BackupSettings:
    return BackupSettings(
        directory=tmp_path / "backups", offsite_directory=tmp_path / "offsite", offsite_passphrase_file=passphrase
    )


@pytest.fixture
def local_settings(tmp_path: Path) -> BackupSettings:
    """No off-site copy, for tests about the archive itself (encrypting costs gpg's key derivation per file)."""
    return BackupSettings(directory=tmp_path / "backups")


def decrypt(passphrase: Path, source: Path, target: Path) -> Path:
    """What an operator runs to read an off-site file (docs/backups.md)."""
    subprocess.run(
        ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--no-symkey-cache", "--passphrase-file",
         str(passphrase), "--output", str(target), "--decrypt", str(source)],
        check=True,
    )  # fmt: skip
    return target


def fingerprint(conninfo: str, dbname: str, skip: frozenset[str] = frozenset({"backups"})) -> dict[str, str]:
    """Every table's full content as one hash."""
    with psycopg.connect(make_conninfo(conninfo, dbname=dbname)) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {
            table: conn.execute(
                sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t").format(
                    sql.Identifier(table)
                )
            ).fetchone()[0]
            for table in tables
            if table not in skip
        }


def test_backup_then_restore_into_a_new_database_gives_the_same_rows(
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings
) -> None:
    result = take_backup(backup_settings, settings.database_conninfo)
    assert result.table_counts["messages"] == 25
    assert result.path.exists()
    assert (result.path.parent / (result.path.name + ".manifest.json")).exists()
    assert result.offsite_path == backup_settings.offsite_directory / (result.path.name + ".gpg")
    restore_backup(backup_settings, settings.database_conninfo, RESTORED)
    assert fingerprint(settings.database_conninfo, RESTORED) == fingerprint(
        settings.database_conninfo, settings.database_name
    )
    row = salon.execute("SELECT status, size_bytes, sha256, table_counts->>'clients' FROM backups").fetchone()
    assert row[0] == "verified"
    assert row[1] == result.size_bytes
    assert row[2] == result.sha256
    with pytest.raises(BackupError, match="not empty"):
        restore_backup(backup_settings, settings.database_conninfo, RESTORED)


def test_a_corrupted_archive_is_detected_and_retention_keeps_the_last_good_one(
    salon: psycopg.Connection, settings: Settings, local_settings: BackupSettings
) -> None:
    good = take_backup(local_settings, settings.database_conninfo)
    bad = take_backup(local_settings, settings.database_conninfo)
    data = bytearray(bad.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed
    bad.path.write_bytes(bytes(data))
    result = drill(local_settings, settings.database_conninfo)
    assert not result.passed
    assert "does not match its checksum" in (result.error or "")
    assert salon.execute("SELECT status FROM backups WHERE id = %s", (bad.id,)).fetchone()[0] == "failed"
    assert (
        prune(BackupSettings(directory=local_settings.directory, keep_daily=1, keep_weekly=0, keep_monthly=0), MOSCOW)
        == []
    )
    assert good.path.exists()
    assert drill(local_settings, settings.database_conninfo).passed, "the drill falls back to the last good one"


def test_pg_dump_failing_is_reported_and_leaves_no_half_file(
    salon: psycopg.Connection, settings: Settings, tmp_path: Path
) -> None:
    tools = tmp_path / "bin"
    pg_dump_as_a_role_that_does_not_exist(tools)
    wrapper(tools, "pg_restore", f'exec {real_program("pg_restore")} "$@"')
    backup_settings = BackupSettings(directory=tmp_path / "backups", pg_bin_dir=tools)
    with pytest.raises(BackupError, match=r"pg_dump failed .*no_such_role"):
        take_backup(backup_settings, settings.database_conninfo)
    assert list((tmp_path / "backups").iterdir()) == []
    assert salon.execute("SELECT status, error LIKE '%%pg_dump failed%%' FROM backups").fetchone() == ("failed", True)


def test_the_compressor_failing_is_reported_and_leaves_no_half_file(
    salon: psycopg.Connection, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "bin"
    # A zstd that fails part-way, as one does on a full disk: whatever pg_dump wrote is not a backup.
    failing = 'head -c 100000 > /dev/null\necho "zstd: error 70 : Write error : No space left" >&2\nexit 1'
    wrapper(tools, "zstd", failing)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    with pytest.raises(BackupError, match=r"zstd failed \(exit 1\).*No space left"):
        take_backup(BackupSettings(directory=tmp_path / "backups"), settings.database_conninfo)
    assert list((tmp_path / "backups").iterdir()) == []
    assert salon.execute("SELECT status FROM backups").fetchone() == ("failed",)


def test_an_archive_compressed_by_pg_dump_itself_still_restores(
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings
) -> None:
    """Backups taken before archives were compressed by zstd are plain custom archives: they stay restorable."""
    directory = backup_settings.directory
    directory.mkdir(parents=True)
    archive = directory / "fleet-20261101T040000Z-1.dump"
    tools = PgTools(backup_settings, settings.database_conninfo)
    tools.run("pg_dump", tools.connection_option(), "--format=custom", f"--file={archive}")
    salon.execute(
        "INSERT INTO backups (status, finished_at, path, sha256, size_bytes, table_counts)"
        " VALUES ('verified', now(), %s, %s, %s, '{\"messages\": 25}')",
        (str(archive), sha256_of(archive), archive.stat().st_size),
    )
    restore_backup(backup_settings, settings.database_conninfo, RESTORED)
    assert fingerprint(settings.database_conninfo, RESTORED) == fingerprint(
        settings.database_conninfo, settings.database_name
    )


def test_an_older_pg_dump_is_refused(salon: psycopg.Connection, settings: Settings, tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    wrapper(tools, "pg_dump", 'echo "pg_dump (PostgreSQL) 11.2"')  # an old client, as some hosts still have
    wrapper(tools, "pg_restore", f'exec {real_program("pg_restore")} "$@"')
    with pytest.raises(BackupError, match=r"pg_dump 11.2 is older than the server \(15\)"):
        take_backup(BackupSettings(directory=tmp_path / "backups", pg_bin_dir=tools), settings.database_conninfo)


def test_an_archive_lacking_tables_or_too_small_is_not_good(
    salon: psycopg.Connection, settings: Settings, local_settings: BackupSettings
) -> None:
    result = take_backup(local_settings, settings.database_conninfo)
    tools = PgTools(local_settings, settings.database_conninfo)
    with pytest.raises(BackupError, match="lacks table data for: ghost_table"):
        verify_archive(tools, result.path, result.sha256, [*result.table_counts, "ghost_table"], 0)
    with pytest.raises(BackupError, match="implausibly small"):
        verify_archive(tools, result.path, result.sha256, list(result.table_counts), 10**9)


def test_retention_over_a_simulated_month_keeps_exactly_the_expected_set(
    salon: psycopg.Connection, tmp_path: Path
) -> None:
    directory = tmp_path / "backups"
    directory.mkdir()
    ids: dict[str, int] = {}
    moments = [(f"10-{day:02d}", datetime(2026, 10, day, 4, tzinfo=MOSCOW)) for day in range(1, 31)]
    moments.append(("10-30 late", datetime(2026, 10, 30, 16, tzinfo=MOSCOW)))
    names = {
        label: f"fleet-{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}-{n}.dump" for n, (label, moment) in enumerate(moments)
    }
    for label, moment in moments:
        path = directory / names[label]
        path.write_bytes(b"archive")
        ids[label] = salon.execute(
            "INSERT INTO backups (status, finished_at, path, sha256, size_bytes) VALUES ('verified', %s, %s, %s, 7)"
            " RETURNING id",
            (moment, str(path), "0" * 64),
        ).fetchone()[0]
    salon.execute("INSERT INTO backups (status, finished_at) VALUES ('failed', %s)", (moments[-1][1],))
    pruned = prune(BackupSettings(directory=directory, keep_daily=7, keep_weekly=4, keep_monthly=6), MOSCOW)
    # 7 days: Oct 24–30 (the later one on the 30th); 4 ISO weeks: also the 18th and the 11th; October: the 30th.
    kept_labels = {"10-30 late", "10-29", "10-28", "10-27", "10-26", "10-25", "10-24", "10-18", "10-11"}
    assert set(pruned) == {ids[label] for label in ids if label not in kept_labels}
    kept = {row[0] for row in salon.execute("SELECT id FROM backups WHERE status = 'verified'").fetchall()}
    assert kept == {ids[label] for label in kept_labels}
    assert sorted(p.name for p in directory.iterdir()) == sorted(names[label] for label in kept_labels)


def test_the_drill_passes_on_a_good_backup_and_fails_on_a_bad_one(
    salon: psycopg.Connection, settings: Settings, local_settings: BackupSettings
) -> None:
    backup = take_backup(local_settings, settings.database_conninfo)
    good = drill(local_settings, settings.database_conninfo)
    assert good.passed
    assert good.backup_id == backup.id
    salon.execute(
        "UPDATE backups SET table_counts = jsonb_set(table_counts, '{messages}', '26') WHERE id = %s", (backup.id,)
    )
    bad = drill(local_settings, settings.database_conninfo)
    assert not bad.passed
    assert bad.differences == {"messages": (26, 25)}
    checks = salon.execute("SELECT status FROM health_checks WHERE check_name = 'backup_drill' ORDER BY id")
    assert [row[0] for row in checks.fetchall()] == ["healthy", "unhealthy"]
    with psycopg.connect(make_conninfo(settings.database_conninfo, dbname="postgres")) as admin:
        scratch = scratch_name(settings.database_name)
        assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (scratch,)).fetchone()[0] == 0


def test_restoring_over_the_live_database_needs_force(
    salon: psycopg.Connection, settings: Settings, local_settings: BackupSettings
) -> None:
    take_backup(local_settings, settings.database_conninfo)
    with pytest.raises(BackupError, match="live database"):
        restore_backup(local_settings, settings.database_conninfo, settings.database_name)
    assert os.path.exists(local_settings.directory)


def test_off_site_there_is_only_an_encrypted_copy_and_it_decrypts_to_a_restorable_archive(
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings, passphrase: Path, tmp_path: Path
) -> None:
    result = take_backup(backup_settings, settings.database_conninfo)
    local, remote = backup_settings.directory, backup_settings.offsite_directory
    assert remote is not None
    assert result.offsite_path is not None
    for directory in (local, remote):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for path in directory.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    stem = result.path.name.removesuffix(".dump.zst")
    expected = {result.path.name + ".gpg", result.path.name + ".manifest.json.gpg"}
    if (local / f"{stem}.globals.sql").exists():
        expected.add(f"{stem}.globals.sql.gpg")
    assert {path.name for path in remote.iterdir()} == expected, "only encrypted files, nothing half-copied"
    assert not any(path.name.endswith((".gpg", ".tmp")) for path in local.iterdir()), "nothing staged is left"
    # Disaster recovery: the local directory is lost; the off-site copy, decrypted, is what restore reads.
    manifest = decrypt(passphrase, remote / (result.path.name + ".manifest.json.gpg"), tmp_path / "manifest.json")
    for path in list(local.iterdir()):
        path.unlink()
    decrypt(passphrase, result.offsite_path, result.path)
    assert sha256_of(result.path) == result.sha256
    assert f'"sha256": "{result.sha256}"' in manifest.read_text()
    restore_backup(backup_settings, settings.database_conninfo, RESTORED)
    assert fingerprint(settings.database_conninfo, RESTORED) == fingerprint(
        settings.database_conninfo, settings.database_name
    )


# Each fake gpg first notes what is off-site at that moment: nothing may be there before encryption succeeded.
FAILING_GPG = 'ls -A {remote} >> {seen}\necho "gpg: signing failed: Inappropriate ioctl for device" >&2\nexit 2'
# Encrypts for real, but what it writes does not decrypt: the decrypt-check must catch it.
BAD_DECRYPT_GPG = (
    'ls -A {remote} >> {seen}\ncase "$*" in *--decrypt*) echo "gpg: decryption failed: Bad session key" >&2; exit 2;;'
    ' esac\nexec {gpg} "$@"'
)


@pytest.mark.parametrize(
    ("gpg_body", "reason"),
    [
        (FAILING_GPG, r"encrypting fleet-.*: gpg failed \(exit 2\): gpg: signing failed"),
        (BAD_DECRYPT_GPG, r"decrypt-check of fleet-.*\.gpg: gpg failed \(exit 2\): gpg: decryption failed"),
    ],
    ids=["gpg fails", "encrypted file does not decrypt"],
)
def test_encryption_failing_fails_the_backup_and_leaves_nothing_off_site(
    salon: psycopg.Connection,
    settings: Settings,
    backup_settings: BackupSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gpg_body: str,
    reason: str,
) -> None:
    remote = backup_settings.offsite_directory
    assert remote is not None
    remote.mkdir(mode=0o700)  # mounted, as the remote disk is
    tools = tmp_path / "bin"
    seen = tmp_path / "seen-off-site.txt"
    wrapper(tools, "gpg", gpg_body.format(gpg=shutil.which("gpg"), remote=remote, seen=seen))
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    with pytest.raises(BackupError, match=rf"backup \d+ failed: off-site copy not made: {reason}") as caught:
        take_backup(backup_settings, settings.database_conninfo)
    assert "nothing of it is left off-site" in str(caught.value)
    assert list(remote.iterdir()) == []
    assert seen.exists()
    assert seen.read_text() == "", "nothing was off-site while gpg ran"
    assert list(backup_settings.directory.iterdir()) == [], "a failed backup leaves no files, encrypted or plain"
    status, error = salon.execute("SELECT status, error FROM backups").fetchone()
    assert status == "failed"
    assert "gpg failed (exit 2)" in error


def test_a_missing_passphrase_file_fails_the_backup_before_the_dump(
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings, passphrase: Path
) -> None:
    passphrase.unlink()
    with pytest.raises(BackupError, match=r"off-site encryption is not ready: .*offsite-passphrase .*does not exist"):
        take_backup(backup_settings, settings.database_conninfo)
    remote = backup_settings.offsite_directory
    assert remote is not None
    assert not remote.exists() or list(remote.iterdir()) == [], "nothing off-site"
    assert list(backup_settings.directory.iterdir()) == []
    assert salon.execute("SELECT status, error LIKE '%%does not exist%%' FROM backups").fetchone() == ("failed", True)


def test_a_copy_failing_half_way_removes_what_it_already_copied_off_site(
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest and globals go first, the archive last; the archive's copy failing takes them back out."""
    copy = offsite.copy_verified

    def disk_full_on_the_archive(source: Path, directory: Path) -> Path:
        if source.name.endswith(".dump.zst.gpg"):
            (directory / (source.name + ".tmp")).write_bytes(source.read_bytes()[:1000])
            raise OSError(28, "No space left on device")
        return copy(source, directory)

    monkeypatch.setattr(offsite, "copy_verified", disk_full_on_the_archive)
    with pytest.raises(BackupError, match=r"off-site copy not made: no space left on device \(.*offsite\)"):
        take_backup(backup_settings, settings.database_conninfo)
    assert list(backup_settings.offsite_directory.iterdir()) == []  # type: ignore[union-attr]
    assert salon.execute("SELECT status FROM backups").fetchone() == ("failed",)


def test_a_stale_plain_file_off_site_is_no_backup_and_retention_reports_it_but_leaves_it(
    salon: psycopg.Connection,
    settings: Settings,
    backup_settings: BackupSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An earlier version copied the plain archive off-site before encrypting it, and left it there when gpg
    failed (or made plain copies only). Such a file holds the credentials unencrypted: retention never deletes
    it (it deletes only the encrypted files the fleet wrote) but names it in an error on every run."""
    remote = backup_settings.offsite_directory
    assert remote is not None
    remote.mkdir(mode=0o700)
    stale = remote / "fleet-20250101T010000Z-999.dump.zst"
    stale.write_bytes(b"plain archive of an earlier version")
    half = remote / "fleet-20250102T010000Z-998.dump.zst.tmp"
    half.write_bytes(b"half a plain copy")
    old = take_backup(backup_settings, settings.database_conninfo)
    assert old.offsite_path is not None
    assert old.offsite_path.name.endswith(".gpg")
    # An old row naming a plain off-site copy (made without encryption), and the fleet's encrypted `old`, both
    # a year old, so retention prunes them.
    plain_row = salon.execute(
        "INSERT INTO backups (status, finished_at, path, offsite_path, sha256, size_bytes)"
        " VALUES ('verified', now() - interval '400 days', NULL, %s, repeat('a', 64), 1) RETURNING id",
        (str(stale),),
    ).fetchone()[0]
    salon.execute("UPDATE backups SET finished_at = now() - interval '401 days' WHERE id = %s", (old.id,))
    new = take_backup(backup_settings, settings.database_conninfo)
    newest_only = backup_settings.model_copy(update={"keep_daily": 1, "keep_weekly": 0, "keep_monthly": 0})
    with caplog.at_level(logging.ERROR, logger="shared.backups.retention"):
        pruned = prune(newest_only, MOSCOW)
    assert sorted(pruned) == sorted([plain_row, old.id])
    assert stale.exists(), "retention leaves plain files off-site alone"
    assert half.exists()
    assert not old.offsite_path.exists(), "the encrypted copy of a pruned backup is deleted"
    assert not old.path.exists()
    assert {path.name for path in remote.iterdir() if path.name.startswith(new.path.name)} == {
        new.path.name + ".gpg",
        new.path.name + ".manifest.json.gpg",
    }
    assert f"refusing {stale.name!r}: not a backup file name" in caplog.text
    assert "2 plain (unencrypted) backup files in the off-site directory" in caplog.text
    assert f"{stale.name}, {half.name}" in caplog.text
    with pytest.raises(BackupError, match="not verified"):
        restore_backup(backup_settings, settings.database_conninfo, RESTORED, backup_id=plain_row)


@pytest.mark.parametrize(
    "target",
    [
        "host=127.0.0.1 dbname=elsewhere",
        "fleet; DROP DATABASE fleet_test",
        "x" * 64,
        "1starts_with_a_digit",
        "",
    ],
)
def test_a_restore_target_must_be_a_plain_database_name(
    salon: psycopg.Connection, settings: Settings, local_settings: BackupSettings, target: str
) -> None:
    take_backup(local_settings, settings.database_conninfo)
    with pytest.raises(BackupError, match="refusing database name"):
        restore_backup(local_settings, settings.database_conninfo, target)


def test_restore_and_retention_touch_only_backup_files_in_the_configured_directories(
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings, tmp_path: Path
) -> None:
    result = take_backup(backup_settings, settings.database_conninfo)
    precious = tmp_path / "precious.txt"
    precious.write_text("not a backup")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    impostor = elsewhere / result.path.name
    impostor.write_bytes(result.path.read_bytes())
    for path in (str(precious), str(impostor)):
        salon.execute("UPDATE backups SET path = %s WHERE id = %s", (path, result.id))
        with pytest.raises(BackupError, match="refusing"):
            restore_backup(backup_settings, settings.database_conninfo, RESTORED)
    # Retention of a row that names a foreign file leaves the file alone.
    salon.execute(
        "INSERT INTO backups (status, finished_at, path, offsite_path, sha256, size_bytes)"
        " VALUES ('verified', now() - interval '400 days', %s, %s, repeat('a', 64), 1)",
        (str(precious), str(impostor)),
    )
    salon.execute("UPDATE backups SET path = %s WHERE id = %s", (str(result.path), result.id))
    prune(backup_settings, MOSCOW)
    assert precious.exists()
    assert impostor.exists()
    assert result.path.exists(), "the newest verified backup is kept"


def test_the_drill_uses_a_fixed_length_scratch_database_never_the_live_one() -> None:
    long_live = "f" * 60
    assert len(scratch_name(long_live)) == len(scratch_name("fleet")) < 63
    assert scratch_name(long_live) != long_live[:63]
    assert scratch_name("fleet") != scratch_name("fleet_test")


def test_the_tools_get_every_connection_option_of_the_fleets_url(
    salon: psycopg.Connection, settings: Settings, tmp_path: Path, passphrase: Path
) -> None:
    """TLS mode and certificate files, and options libpq has no PG* variable for (keepalives_idle), reach
    pg_dump, pg_dumpall and pg_restore as they reach the fleet's own connection; the password only through the
    environment. (The test server has no TLS: `sslmode=prefer` falls back, so the files need not exist.)"""
    tls = {
        "sslmode": "prefer",
        "sslrootcert": str(tmp_path / "root ca.crt"),
        "sslcert": str(tmp_path / "fleet.crt"),
        "sslkey": str(tmp_path / "fleet.key"),
        "keepalives_idle": "30",
        "password": "not-on-the-command-line",
    }
    conninfo = make_conninfo(settings.database_conninfo, **tls)
    tools, calls = tmp_path / "bin", tmp_path / "calls.txt"
    record = f'{{ printf "%s" "$(basename "$0")"; printf " <%s>" "$@"; echo; env | grep ^PG | sort; }} >> {calls}'
    for program in ("pg_dump", "pg_dumpall", "pg_restore"):
        wrapper(tools, program, f'{record}\nexec {real_program(program)} "$@"')
    backup_settings = BackupSettings(
        directory=tmp_path / "backups",
        offsite_directory=tmp_path / "offsite",
        offsite_passphrase_file=passphrase,
        pg_bin_dir=tools,
    )
    take_backup(backup_settings, conninfo)
    restore_backup(backup_settings, conninfo, RESTORED)
    log = calls.read_text()
    invocations = [line for line in log.splitlines() if line.startswith("pg_")]
    connecting = [line for line in invocations if "<--dbname=" in line]
    assert {line.split()[0] for line in connecting} == {"pg_dump", "pg_dumpall", "pg_restore"}
    for line in connecting:
        dbname = line.split("<--dbname=")[1].split(">")[0]
        parts = conninfo_to_dict(dbname)
        assert {key: parts.get(key) for key in tls if key != "password"} == {
            key: value for key, value in tls.items() if key != "password"
        }
        assert "password" not in parts
    assert f"dbname={RESTORED}" in next(line for line in connecting if line.startswith("pg_restore"))
    assert "not-on-the-command-line" not in "".join(invocations)
    assert "PGPASSWORD=not-on-the-command-line" in log
    assert f"PGSSLROOTCERT={tls['sslrootcert']}" in log
    assert "PGSSLMODE=prefer" in log
    # And the real pg_dump acts on them: sslmode=require against this server without TLS is refused.
    strict = PgTools(backup_settings, make_conninfo(settings.database_conninfo, sslmode="require"))
    with pytest.raises(BackupError, match="server does not support SSL, but SSL was required"):
        strict.run("pg_dump", strict.connection_option(), "--schema-only")


def test_a_secret_with_no_pg_variable_is_refused_rather_than_put_on_the_command_line(settings: Settings) -> None:
    tools = PgTools(BackupSettings(), make_conninfo(settings.database_conninfo, sslpassword="key passphrase"))
    with pytest.raises(BackupError, match=r"sslpassword could reach pg_dump only on its command line"):
        tools.connection_option()


def test_offsite_encryption_needs_gpg_and_a_passphrase_file_only_its_owner_reads(
    tmp_path: Path, passphrase: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert offsite_encryption_problems(BackupSettings()) == [], "no off-site copies, nothing to check"
    configured = BackupSettings(offsite_directory=tmp_path / "offsite", offsite_passphrase_file=passphrase)
    assert offsite_encryption_problems(configured) == []
    passphrase.chmod(0o640)
    assert offsite_encryption_problems(configured) == [
        f"the off-site passphrase file {passphrase} (FLEET_BACKUP__OFFSITE_PASSPHRASE_FILE) has mode 0640:"
        " others may read it; chmod 600 it (owner only)"
    ]
    passphrase.chmod(0o600)
    passphrase.write_text("\n")
    assert offsite_encryption_problems(configured)[0].endswith("is empty: gpg reads the passphrase from its first line")
    passphrase.unlink()
    assert offsite_encryption_problems(configured)[0].endswith("does not exist")
    no_passphrase = BackupSettings(offsite_directory=tmp_path / "offsite")
    assert "without FLEET_BACKUP__OFFSITE_PASSPHRASE_FILE" in offsite_encryption_problems(no_passphrase)[0]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert offsite_encryption_problems(no_passphrase)[0].startswith("gpg is not installed")


def test_fleet_check_reports_offsite_encryption_that_is_not_ready(
    fleet_env: dict[str, str], tmp_path: Path, passphrase: Path
) -> None:
    env = {
        **fleet_env,
        "FLEET_BACKUP__OFFSITE_DIRECTORY": str(tmp_path / "offsite"),
        "FLEET_BACKUP__OFFSITE_PASSPHRASE_FILE": str(passphrase),
    }

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers.cli", "check", "--offline"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    ready = check()
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert f"off-site backups: encrypted with gpg before they leave, passphrase file {passphrase}" in ready.stdout
    passphrase.chmod(0o644)
    loose = check()
    assert loose.returncode == 1
    assert (
        f"PROBLEM: the off-site passphrase file {passphrase} (FLEET_BACKUP__OFFSITE_PASSPHRASE_FILE) has mode 0644"
        in loose.stdout
    )
