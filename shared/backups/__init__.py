"""Backups that are proven restorable: dump, verify, copy off-site, prune with care, restore, drill."""
