"""Run a command under the system call filter and address families a systemd unit file declares, and the
kernel's W^X lock (what MemoryDenyWriteExecute= stands for): the unit's seccomp sandbox without systemd.

    /usr/bin/python3 tests/unit_seccomp.py UNIT_FILE COMMAND...

Runs under the system Python, which has Debian's python3-seccomp (libseccomp's own bindings). The unit's
SystemCallFilter= groups are expanded by `systemd-analyze syscall-filter`, so the filter is the unit's, as systemd
would build it: the allowed set minus the denied groups, EPERM for the rest (SystemCallErrorNumber=EPERM), and
socket() only for the RestrictAddressFamilies= families (other families get EPERM here where systemd returns
EAFNOSUPPORT: libseccomp takes one comparison per argument and rule, and either way the socket is not made).
"""

import ctypes
import errno
import os
import socket
import subprocess
import sys

import seccomp

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def unit_settings(path: str) -> tuple[list[str], list[str]]:
    filters, families = [], []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line.startswith("SystemCallFilter="):
            filters.append(line.split("=", 1)[1])
        elif line.startswith("RestrictAddressFamilies="):
            families += line.split("=", 1)[1].split()
    return filters, families


def expand(name: str, seen: set | None = None) -> set[str]:
    """A syscall group to syscall names, nested groups included."""
    seen = set() if seen is None else seen
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                             check=True).stdout
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            names |= expand(entry, seen)
    return names


def main() -> None:
    unit, command = sys.argv[1], sys.argv[2:]
    filters, families = unit_settings(unit)
    allowed: set[str] = set()
    for value in filters:  # systemd: the first line sets the allow list, "~" lines take from it
        if value.startswith("~"):
            for group in value[1:].split():
                allowed -= expand(group)
        else:
            for group in value.split():
                allowed |= expand(group)
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in sorted(allowed - {"socket"}):
        try:
            rules.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):  # a name this architecture or libseccomp does not have
            pass
    if "socket" in allowed:
        numbers = [int(getattr(socket, family)) for family in families]
        for number in numbers:
            rules.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, number))
    assert ctypes.CDLL(None).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0
    rules.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
