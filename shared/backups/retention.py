"""Which backups to keep: the newest of each of the last N days, N weeks and N months, and always the newest
verified one. Pruning runs only right after a new verified backup, and only verified backups count.

Off-site, retention deletes only the encrypted files the fleet wrote there. A plain backup file an earlier
version left off-site (a copy whose encryption failed, or one made without encryption) is never taken for a
backup nor deleted: each run names it in an error (Sentry has it) until an operator removes it by hand."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from shared.backups.files import archive_in, companions, offsite_archive_in, plain_offsite_files
from shared.backups.tools import BackupError
from shared.core.settings import BackupSettings
from shared.data.repositories.backups import BackupRepository

log = logging.getLogger(__name__)


def backups_to_keep(backups: Iterable[tuple[int, datetime]], settings: BackupSettings, zone: ZoneInfo) -> set[int]:
    """Ids to keep among verified (id, finished_at) backups."""
    ordered = sorted(backups, key=lambda item: item[1], reverse=True)
    if not ordered:
        return set()
    keep = {ordered[0][0]}
    buckets: list[tuple[int, object]] = [
        (settings.keep_daily, lambda moment: moment.date()),
        (settings.keep_weekly, lambda moment: tuple(moment.isocalendar())[:2]),
        (settings.keep_monthly, lambda moment: (moment.year, moment.month)),
    ]
    for count, period_of in buckets:
        seen: list[object] = []
        for backup_id, finished in ordered:
            period = period_of(finished.astimezone(zone))  # type: ignore[operator]
            if period in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(period)
            keep.add(backup_id)
    return keep


def _delete_files(settings: BackupSettings, path: str | None, offsite: str | None) -> None:
    """Delete one backup's files, only where the `backups` row names one of ours in a configured directory:
    a plain archive locally, an encrypted one off-site."""
    for location, find in (
        (path, lambda named: archive_in(named, settings.directory)),
        (offsite, lambda named: offsite_archive_in(named, settings.offsite_directory)),
    ):
        if not location:
            continue
        try:
            archive = find(location)
        except BackupError as exc:
            log.error("retention left a file alone: %s", exc)
            continue
        for companion in companions(archive):
            companion.unlink(missing_ok=True)


def report_plain_offsite(settings: BackupSettings) -> list[str]:
    """Name the plain backup files off-site (they hold the WhatsApp credentials unencrypted) so someone removes
    them; retention neither counts nor deletes them. Returns their names."""
    try:
        names = [path.name for path in plain_offsite_files(settings.offsite_directory)]
    except OSError as exc:
        log.warning("could not list the off-site directory for plain backup files: %s", exc)
        return []
    if names:
        log.error(
            "%s plain (unencrypted) backup files in the off-site directory %s, left by an earlier version: not"
            " backups, never deleted by retention; remove them by hand: %s",
            len(names),
            settings.offsite_directory,
            ", ".join(names),
        )
    return names


def prune(settings: BackupSettings, zone: ZoneInfo) -> list[int]:
    """Delete the archives of verified backups outside the retention set; returns the pruned ids."""
    rows = BackupRepository().verified()
    keep = backups_to_keep([(row["id"], row["finished_at"]) for row in rows], settings, zone)
    pruned = []
    for row in rows:
        if row["id"] in keep:
            continue
        _delete_files(settings, row["path"], row["offsite_path"])
        BackupRepository().mark_pruned(row["id"])
        pruned.append(row["id"])
    if pruned:
        log.info("pruned %s backups, kept %s", len(pruned), len(keep))
    report_plain_offsite(settings)
    return sorted(pruned)
