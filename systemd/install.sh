#!/bin/sh
# Installs truesource as a systemd service: the user, the directories, the configuration, the units.
# Idempotent: run it again after an upgrade; it never overwrites an existing /etc/truesource/sensor.toml.
#
#   systemd/install.sh                      # build /opt/truesource (a venv with truesource) and install
#   systemd/install.sh --destdir /tmp/root  # the same under a staging root (packaging, tests)
#   systemd/install.sh --prefix /srv/ts --no-venv   # truesource is already installed in /srv/ts (bin/truesource)
#
# Then: edit /etc/truesource/sensor.toml ([capture] interface, rules), `truesource config check`, and
# `systemctl enable --now truesource` (or truesource@eth1 with /etc/truesource/eth1.toml). docs/deployment.md.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(dirname "$here")
destdir=${DESTDIR:-}
prefix=/opt/truesource
build_venv=1
# The system's Python by default: one under /home or /root (pyenv) would be hidden by the unit's ProtectHome=.
python=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )}

while [ $# -gt 0 ]; do
    case $1 in
        --destdir) destdir=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --no-venv) build_venv=0; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $prefix in /*) ;; *) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;; esac

say() { echo "install.sh: $*"; }

# 1. The program: a virtual environment holding truesource and its dependencies.
if [ $build_venv = 1 ]; then
    if [ ! -x "$destdir$prefix/bin/python" ]; then
        say "creating $destdir$prefix"
        "$python" -m venv "$destdir$prefix"
    fi
    "$destdir$prefix/bin/python" -m pip install -q --upgrade pip setuptools wheel "Cython>=3.0,<4"
    "$destdir$prefix/bin/python" -m pip install -q --no-build-isolation "$source_dir"
    # Under a staging root the venv names its staging path (scripts' #! lines, activate, pyvenv.cfg): make it
    # name $prefix, where the tree is copied to, or every script fails there with "bad interpreter".
    if [ -n "$destdir" ]; then
        grep -rlI --exclude-dir=__pycache__ -e "$destdir$prefix" "$destdir$prefix" | while read -r file; do
            sed -i "s|$destdir$prefix|$prefix|g" "$file"
        done
    fi
fi
if [ ! -x "$destdir$prefix/bin/truesource" ]; then
    echo "install.sh: $destdir$prefix/bin/truesource is missing (drop --no-venv to build it)" >&2
    exit 1
fi

# 2. The user: systemd-sysusers where it exists (the same file it reads at boot), useradd otherwise.
install -d -m 0755 "$destdir/usr/lib/sysusers.d"
install -m 0644 "$here/truesource.sysusers" "$destdir/usr/lib/sysusers.d/truesource.conf"
if command -v systemd-sysusers >/dev/null; then
    install -d -m 0755 "$destdir/etc"
    if [ -n "$destdir" ]; then
        systemd-sysusers --root="$destdir" - < "$here/truesource.sysusers"
    else
        systemd-sysusers - < "$here/truesource.sysusers"
    fi
elif ! getent passwd truesource >/dev/null; then
    [ -z "$destdir" ] || { echo "install.sh: --destdir needs systemd-sysusers" >&2; exit 1; }
    useradd --system --home-dir /var/lib/truesource --no-create-home --shell /usr/sbin/nologin \
        --user-group --comment "truesource DNS sensor" truesource
fi
group=$(awk -F: '$1 == "truesource" { print $3 }' "$destdir/etc/group")

# 3. Directories: configuration (readable by the sensor's group, not by others), keys, rules.
#    /var/lib, /var/log and /run/truesource are made by systemd (StateDirectory=, LogsDirectory=...).
install -d -m 0750 "$destdir/etc/truesource" "$destdir/etc/truesource/rules" \
    "$destdir/etc/truesource/keys" "$destdir/etc/truesource/subscribers"
if [ "$(id -u)" = 0 ]; then
    chgrp "$group" "$destdir/etc/truesource" "$destdir/etc/truesource/rules" \
        "$destdir/etc/truesource/keys" "$destdir/etc/truesource/subscribers"
fi

# 4. The configuration: the documented example, only if there is none yet.
if [ ! -e "$destdir/etc/truesource/sensor.toml" ]; then
    install -m 0640 "$here/sensor.toml" "$destdir/etc/truesource/sensor.toml"
    [ "$(id -u)" != 0 ] || chgrp "$group" "$destdir/etc/truesource/sensor.toml"
    say "wrote /etc/truesource/sensor.toml: set [capture] interface and rules"
fi
if [ ! -e "$destdir/etc/truesource/rules/demo.rules" ]; then
    install -m 0640 "$source_dir/rules/demo.rules" "$destdir/etc/truesource/rules/demo.rules"
    [ "$(id -u)" != 0 ] || chgrp "$group" "$destdir/etc/truesource/rules/demo.rules"
fi

# 5. The units, with the program's path; the documentation the units point at.
install -d -m 0755 "$destdir/etc/systemd/system" "$destdir/usr/share/doc/truesource"
for unit in truesource.service truesource@.service; do
    sed "s|/opt/truesource|$prefix|g" "$here/$unit" > "$destdir/etc/systemd/system/$unit.tmp"
    chmod 0644 "$destdir/etc/systemd/system/$unit.tmp"
    mv "$destdir/etc/systemd/system/$unit.tmp" "$destdir/etc/systemd/system/$unit"
done
install -m 0644 "$source_dir/docs/deployment.md" "$source_dir/docs/config.md" "$destdir/usr/share/doc/truesource/"

if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
say "done: units in $destdir/etc/systemd/system, program $prefix/bin/truesource"
