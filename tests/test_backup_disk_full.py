"""A backup onto a full or unwritable disk, a failed restore drill and a failed off-site copy, with the real
pg_dump and real (small, mounted) file systems: each is named by its cause, `fleet backup`/`fleet drill` say it
in one line, and /health/backups stays unhealthy (an off-site copy: a warning) until a later one succeeds."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.core.settings import BackupSettings, Settings, load_settings
from shared.health.checks import check_backups
from shared.health.server import make_server
from shared.inbound.payload import InboundPayload
from shared.inbound.store import store_message
from tests.support.processes import ROOT
from tests.support.seed import COMPANY

# A small file system: big enough for one backup of the salon below (about 120 KB) and its companions.
FS_KIB = 2048
# What a "full" disk still has free: far less than one archive.
LEFT_FREE = 8 * 1024


@pytest.fixture
def salon(salon: psycopg.Connection) -> psycopg.Connection:
    """The seed salon with 40 chats' messages of random text: an archive of about 120 KB, which does not fit
    in what a full disk leaves."""
    for n in range(40):
        store_message(
            InboundPayload(
                company_id=COMPANY,
                chat_id=f"+7911000{n:04d}",
                gateway_message_id=f"w{n}",
                text=base64.b64encode(os.urandom(3000)).decode(),
                sent_at=datetime(2026, 11, 1, tzinfo=UTC),
            )
        )
    return salon


def _mount(arguments: list[str]) -> str | None:
    """Run mount; None when it worked, else why not."""
    try:
        result = subprocess.run(["mount", *arguments], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return str(exc)
    return None if result.returncode == 0 else (result.stderr.strip() or f"exit {result.returncode}")


@contextlib.contextmanager
def small_filesystem(where: Path, kib: int = FS_KIB, *, read_only: bool = False) -> Iterator[Path]:
    """A real file system of `kib` KiB mounted at `where` (a tmpfs; else a loop-mounted ext4 image), unmounted
    afterwards. Skips, saying why, only where neither can be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={kib}k,mode=0700" + (",ro" if read_only else "")
    tmpfs = _mount(["-t", "tmpfs", "-o", options, "tmpfs", str(where)])
    if tmpfs is not None:
        image = where.with_name(where.name + ".img")
        with image.open("wb") as out:
            out.truncate((2 * kib + 4096) * 1024)  # ext4's journal and metadata take their share first
        made = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], capture_output=True, text=True)
        loop = (
            _mount(["-o", "loop" + (",ro" if read_only else ""), str(image), str(where)])
            if made.returncode == 0
            else (made.stderr.strip() or "mkfs.ext4 failed")
        )
        if loop is not None:
            pytest.skip(f"cannot mount a small file system here: tmpfs: {tmpfs}; loop ext4: {loop}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def mounted_type(where: Path) -> str | None:
    """The type of the file system mounted at `where` (tmpfs, ext4), from the kernel's mount table."""
    found = None
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1] == str(where):
            found = fields[2]
    return found


def fill(directory: Path, leave: int = LEFT_FREE) -> Path:
    """A filler file taking all but `leave` bytes of the file system."""
    stats = os.statvfs(directory)
    filler = directory / "filler"
    with filler.open("wb") as out:
        out.write(b"\xa5" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


def fleet(command: str, env: dict[str, str], *prefix: str) -> subprocess.CompletedProcess[str]:
    """`fleet <command>` as an operator runs it (after `prefix`, e.g. setpriv), its output captured."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "workers.cli", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def failure_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The one line `fleet <command>` printed about its failure: non-zero exit, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith(f"fleet {command}: ") or "FAILED" in line]
    assert lines, output
    return lines[-1]


def files(directory: Path) -> set[str]:
    """The names in a directory (but ext4's lost+found): what a failure must leave as it found."""
    return {path.name for path in directory.iterdir()} - {"lost+found"}


@pytest.fixture
def backup_env(fleet_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**fleet_env, "FLEET_BACKUP__DIRECTORY": str(tmp_path / "backups")}


def grow(db: psycopg.Connection, megabytes: int) -> None:
    """Rows of random hex text (dead letters' payloads): about half that many megabytes of archive."""
    db.execute(
        "INSERT INTO dead_letters (source, reason, payload) SELECT 'test.filler', 'bulk',"
        " jsonb_build_object('blob', (SELECT string_agg(md5(random()::text || n || i), '')"
        " FROM generate_series(1, 1024) i))"
        " FROM generate_series(1, %s) n",
        (megabytes * 32,),
    )


@pytest.mark.parametrize(
    ("megabytes", "pg_dump_running"),
    [(0, False), (8, True)],
    ids=["archive written after pg_dump ended", "pg_dump still dumping when the write fails"],
)
def test_a_backup_onto_a_full_disk_names_the_cause_keeps_the_older_backup_and_is_unhealthy_until_a_good_one(
    salon: psycopg.Connection,
    settings: Settings,
    backup_env: dict[str, str],
    tmp_path: Path,
    megabytes: int,
    pg_dump_running: bool,
) -> None:
    """The reported case is the second: the fleet's own write failed, it stopped pg_dump (SIGKILL), and said only
    `pg_dump failed (exit -9)`."""
    grow(salon, megabytes)
    with small_filesystem(tmp_path / "backups", FS_KIB + megabytes * 1024) as directory:
        older = fleet("backup", backup_env)
        assert older.returncode == 0, older.stdout + older.stderr
        (older_id, older_path), *_ = salon.execute("SELECT id, path FROM backups WHERE status = 'verified'")
        filler = fill(directory)
        before = files(directory)

        full = fleet("backup", backup_env)
        line = failure_line(full, "backup")
        assert "no space left on device" in line.lower(), line
        assert str(directory) in line, "names the directory that is full"
        assert "exit -9" not in line, "the cause, not the signal the fleet sent pg_dump itself"
        assert "SIGKILL" not in line
        if pg_dump_running and mounted_type(directory) == "tmpfs":  # it refuses the first block at once
            assert "pg_dump stopped" in line, line
        if "pg_dump stopped" in line:
            assert line.lower().index("no space left on device") < line.index("pg_dump stopped"), "the cause first"
        assert files(directory) == before, "no partial file left, the older backup's files kept"
        assert salon.execute("SELECT status FROM backups WHERE id = %s", (older_id,)).fetchone() == ("verified",)
        assert Path(older_path).exists()
        status, error = salon.execute("SELECT status, error FROM backups ORDER BY id DESC LIMIT 1").fetchone()
        assert status == "failed"
        assert "no space left on device" in error.lower()

        part = check_backups(settings)
        assert part.status == "unhealthy"
        assert any("no space left on device" in problem.lower() for problem in part.problems), part.problems
        with make_server(settings, port=0).running() as server:
            url = f"http://127.0.0.1:{server.server_address[1]}/health/backups"
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(url, timeout=30)
            assert answer.value.code == 503
            body = json.loads(answer.value.read().decode())
        assert any("no space left on device" in problem.lower() for problem in body["problems"]), body

        filler.unlink()
        again = fleet("backup", backup_env)
        assert again.returncode == 0, again.stdout + again.stderr
        part = check_backups(settings)
        assert part.status == "healthy", part.problems
        assert not any(name.endswith(".tmp") for name in files(directory))


def test_a_read_only_backup_directory_is_permission_denied_and_unhealthy(
    salon: psycopg.Connection, settings: Settings, backup_env: dict[str, str], tmp_path: Path
) -> None:
    with small_filesystem(tmp_path / "backups", read_only=True) as directory:
        result = fleet("backup", backup_env)
        line = failure_line(result, "backup")
        assert "permission denied" in line.lower(), line
        assert str(directory) in line
        assert files(directory) == set()
        part = check_backups(settings)
        assert part.status == "unhealthy"
        assert any("permission denied" in problem.lower() for problem in part.problems), part.problems


def test_a_backup_directory_the_fleets_user_may_not_change_is_permission_denied(
    salon: psycopg.Connection, settings: Settings, backup_env: dict[str, str], tmp_path: Path
) -> None:
    """As a fleet running under its own user finds a directory root made: root with the capabilities that
    override file permissions dropped (setpriv), on a directory owned by `nobody`."""
    directory = tmp_path / "backups"
    directory.mkdir(mode=0o755)
    os.chown(directory, 65534, 65534)
    no_override = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    probe = subprocess.run([*no_override, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.strip()}")
    result = fleet("backup", backup_env, *no_override)
    line = failure_line(result, "backup")
    assert "permission denied" in line.lower(), line
    assert str(directory) in line
    assert files(directory) == set()
    part = check_backups(settings)
    assert part.status == "unhealthy"
    assert any("permission denied" in problem.lower() for problem in part.problems), part.problems


def test_a_failed_drill_is_unhealthy_with_its_cause_until_a_drill_passes(
    salon: psycopg.Connection, settings: Settings, backup_env: dict[str, str]
) -> None:
    first = fleet("backup", backup_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert fleet("drill", backup_env).returncode == 0
    assert check_backups(settings).status == "healthy"
    (path,) = salon.execute("SELECT path FROM backups WHERE status = 'verified'").fetchone()
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of the archive changed: the disk or someone corrupted it
    Path(path).write_bytes(bytes(data))

    line = failure_line(fleet("drill", backup_env), "drill")
    assert "does not match its checksum" in line, line
    part = check_backups(settings)
    assert part.status == "unhealthy"
    assert any("drill" in p and "does not match its checksum" in p for p in part.problems), part.problems

    fresh = fleet("backup", backup_env)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    part = check_backups(settings)
    assert part.status == "unhealthy", "a new backup does not clear a failed drill"
    assert all("drill" in problem for problem in part.problems), part.problems

    assert fleet("drill", backup_env).returncode == 0
    part = check_backups(settings)
    assert part.status == "healthy", part.problems


@pytest.fixture
def role_without_createdb(salon: psycopg.Connection, settings: Settings) -> Iterator[str]:
    """A login role that may use the fleet's tables but not create databases: the drill's scratch database
    cannot be made. Dropped afterwards (roles are cluster-wide)."""
    role = settings.database_name.removesuffix("_test") + "_nocreate_test"
    quoted = sql.Identifier(role)
    salon.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(quoted))
    salon.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB NOSUPERUSER").format(quoted))
    salon.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(quoted))
    salon.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}").format(quoted))
    yield role
    salon.execute(sql.SQL("DROP OWNED BY {}").format(quoted))
    salon.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(quoted))


def test_a_drill_whose_scratch_database_cannot_be_created_fails_by_its_cause(
    salon: psycopg.Connection, settings: Settings, backup_env: dict[str, str], role_without_createdb: str
) -> None:
    first = fleet("backup", backup_env)
    assert first.returncode == 0, first.stdout + first.stderr
    url = conninfo_to_dict(backup_env["DATABASE_URL"])
    as_role = {**backup_env, "DATABASE_URL": make_conninfo("", **{**url, "user": role_without_createdb})}
    line = failure_line(fleet("drill", as_role), "drill")
    assert "permission denied to create database" in line, line
    part = check_backups(settings)
    assert part.status == "unhealthy"
    assert any("permission denied to create database" in problem for problem in part.problems), part.problems
    assert fleet("drill", backup_env).returncode == 0
    assert check_backups(settings).status == "healthy"


@pytest.fixture
def passphrase(tmp_path: Path) -> Path:
    path = tmp_path / "offsite-passphrase"
    path.write_text("correct horse battery staple\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(("read_only", "cause"), [(False, "no space left on device"), (True, "permission denied")])
def test_an_off_site_copy_failing_is_a_warning_with_its_cause_until_a_good_copy(
    salon: psycopg.Connection,
    backup_env: dict[str, str],
    tmp_path: Path,
    passphrase: Path,
    read_only: bool,
    cause: str,
) -> None:
    remote = tmp_path / "offsite"
    env = {
        **backup_env,
        "FLEET_BACKUP__OFFSITE_DIRECTORY": str(remote),
        "FLEET_BACKUP__OFFSITE_PASSPHRASE_FILE": str(passphrase),
    }
    offsite_settings = load_settings(
        backup=BackupSettings(
            directory=tmp_path / "backups", offsite_directory=remote, offsite_passphrase_file=passphrase
        )
    )
    good = fleet("backup", env)
    assert good.returncode == 0, good.stdout + good.stderr
    local = files(tmp_path / "backups")
    with small_filesystem(remote, read_only=read_only) as mounted:
        if not read_only:
            filler = fill(mounted)
        line = failure_line(fleet("backup", env), "backup")
        assert cause in line.lower(), line
        assert str(mounted) in line
        assert files(tmp_path / "backups") == local, "the older backup kept, nothing of the failed one left"
        part = check_backups(offsite_settings)
        assert part.status == "warning", part.problems
        assert any("off-site" in p and cause in p.lower() for p in part.problems), part.problems
        if not read_only:
            assert files(mounted) == {"filler"}, "nothing half-copied off-site"
            filler.unlink()
            fixed = fleet("backup", env)
            assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    if read_only:
        fixed = fleet("backup", env)  # the remote disk mounted writable again
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    part = check_backups(offsite_settings)
    assert part.status == "healthy", part.problems
