"""Backups with the real pg_dump and pg_restore: restorable, verified, pruned with care, drilled."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.backups.engine import take_backup, verify_archive
from shared.backups.files import scratch_name
from shared.backups.restore import drill, restore_backup
from shared.backups.retention import prune
from shared.backups.tools import BackupError, PgTools, sha256_of
from shared.core.settings import BackupSettings, Settings
from shared.inbound.payload import InboundPayload
from shared.inbound.store import store_message
from tests.support.fake_tools import real_program, wrapper
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
def backup_settings(tmp_path: Path) -> BackupSettings:
    return BackupSettings(directory=tmp_path / "backups", offsite_directory=tmp_path / "offsite")


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
    assert result.offsite_path is not None
    assert result.offsite_path.read_bytes() == result.path.read_bytes()
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
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings
) -> None:
    good = take_backup(backup_settings, settings.database_conninfo)
    bad = take_backup(backup_settings, settings.database_conninfo)
    data = bytearray(bad.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed
    bad.path.write_bytes(bytes(data))
    result = drill(backup_settings, settings.database_conninfo)
    assert not result.passed
    assert "does not match its checksum" in (result.error or "")
    assert salon.execute("SELECT status FROM backups WHERE id = %s", (bad.id,)).fetchone()[0] == "failed"
    assert (
        prune(BackupSettings(directory=backup_settings.directory, keep_daily=1, keep_weekly=0, keep_monthly=0), MOSCOW)
        == []
    )
    assert good.path.exists()
    assert drill(backup_settings, settings.database_conninfo).passed, "the drill falls back to the last good one"


def test_pg_dump_failing_is_reported_and_leaves_no_half_file(
    salon: psycopg.Connection, settings: Settings, tmp_path: Path
) -> None:
    tools = tmp_path / "bin"
    # The real pg_dump, connecting as a role that does not exist: it fails as bad credentials do.
    real = real_program("pg_dump")
    wrapper(
        tools, "pg_dump", f'[ "$1" = --version ] && exec {real} --version\nexec {real} --username=no_such_role "$@"'
    )
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
    PgTools(backup_settings, settings.database_conninfo).run("pg_dump", "--format=custom", f"--file={archive}")
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
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings
) -> None:
    result = take_backup(backup_settings, settings.database_conninfo)
    tools = PgTools(backup_settings, settings.database_conninfo)
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
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings
) -> None:
    backup = take_backup(backup_settings, settings.database_conninfo)
    good = drill(backup_settings, settings.database_conninfo)
    assert good.passed
    assert good.backup_id == backup.id
    salon.execute(
        "UPDATE backups SET table_counts = jsonb_set(table_counts, '{messages}', '26') WHERE id = %s", (backup.id,)
    )
    bad = drill(backup_settings, settings.database_conninfo)
    assert not bad.passed
    assert bad.differences == {"messages": (26, 25)}
    checks = salon.execute("SELECT status FROM health_checks WHERE check_name = 'backup_drill' ORDER BY id")
    assert [row[0] for row in checks.fetchall()] == ["healthy", "unhealthy"]
    with psycopg.connect(make_conninfo(settings.database_conninfo, dbname="postgres")) as admin:
        scratch = scratch_name(settings.database_name)
        assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (scratch,)).fetchone()[0] == 0


def test_restoring_over_the_live_database_needs_force(
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings
) -> None:
    take_backup(backup_settings, settings.database_conninfo)
    with pytest.raises(BackupError, match="live database"):
        restore_backup(backup_settings, settings.database_conninfo, settings.database_name)
    assert os.path.exists(backup_settings.directory)


def test_backup_files_are_private_and_the_offsite_copy_can_be_encrypted(
    salon: psycopg.Connection, settings: Settings, tmp_path: Path
) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse battery staple\n")
    encrypted = BackupSettings(
        directory=tmp_path / "backups", offsite_directory=tmp_path / "offsite", offsite_passphrase_file=passphrase
    )
    result = take_backup(encrypted, settings.database_conninfo)
    for directory in (tmp_path / "backups", tmp_path / "offsite"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for path in directory.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert result.offsite_path is not None
    assert result.offsite_path.name.endswith(".dump.zst.gpg")
    assert not (tmp_path / "offsite" / result.path.name).exists(), "no plain copy off-site"
    decrypted = tmp_path / "decrypted.dump"
    import subprocess

    subprocess.run(
        ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase-file", str(passphrase),
         "--output", str(decrypted), "--decrypt", str(result.offsite_path)],
        check=True,
    )  # fmt: skip
    assert decrypted.read_bytes() == result.path.read_bytes()


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
    salon: psycopg.Connection, settings: Settings, backup_settings: BackupSettings, target: str
) -> None:
    take_backup(backup_settings, settings.database_conninfo)
    with pytest.raises(BackupError, match="refusing database name"):
        restore_backup(backup_settings, settings.database_conninfo, target)


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
