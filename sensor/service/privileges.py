"""Dropping root after the captures are open: the open AF_PACKET sockets keep working, nothing else is kept.

The order is the one setuid(2) requires: supplementary groups, then the group, then the user (after setuid the
process could no longer change its groups). Changing every user id away from 0 clears the permitted, effective
and ambient capability sets, so no capability survives the drop.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd

from sensor.errors import StartupError

log = logging.getLogger(__name__)


def check_identity(user: str | None, group: str | None) -> None:
    """Fails at start, before anything is opened, when the user or group does not exist."""
    if user is not None:
        _user(user)
    if group is not None:
        _group(group)


def drop_privileges(user: str | None, group: str | None = None) -> bool:
    """Become `user` (and `group`, default the user's own) if running as root; True when a drop happened."""
    if user is None and group is None:
        return False
    if os.geteuid() != 0:
        log.info("not running as root: staying user %d (--user/--group apply only when started as root)",
                 os.geteuid())
        return False
    entry = _user(user) if user is not None else pwd.getpwuid(0)
    gid = _group(group).gr_gid if group is not None else entry.pw_gid
    try:
        os.setgroups([gid] if user is None else [gid, *_supplementary(entry.pw_name, gid)])
        os.setresgid(gid, gid, gid)
        os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    except OSError as err:
        raise StartupError(f"cannot drop privileges to {entry.pw_name}: {err.strerror}") from None
    if entry.pw_uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:  # cannot happen after setresuid; refuse to go on if it did
            raise StartupError("privilege drop failed: could become root again")
    log.info("dropped privileges to user %s (uid %d, gid %d)", entry.pw_name, entry.pw_uid, gid)
    return True


def _supplementary(name: str, gid: int) -> list[int]:
    return sorted({g.gr_gid for g in grp.getgrall() if name in g.gr_mem} - {gid})


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise StartupError(f"--user: no such user {name!r}") from None


def _group(name: str) -> grp.struct_group:
    try:
        return grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
    except KeyError:
        raise StartupError(f"--group: no such group {name!r}") from None
