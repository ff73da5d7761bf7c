"""What `capture` does as a service, around the capture loop: privilege drop once the captures are open, systemd
readiness and watchdog, status lines, the metrics endpoint, and re-reading the configuration on SIGHUP."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

from sensor import config
from sensor.service.metrics import DEFAULT_METRICS, MetricsServer, metrics_address
from sensor.service.notify import Notifier
from sensor.service.privileges import check_identity, drop_privileges

log = logging.getLogger("truesource")


def add_options(parser: argparse.ArgumentParser) -> None:
    """Options of `capture` that only a long-running sensor needs."""
    parser.add_argument("--user", metavar="USER",
                        help="when started as root: open the captures, then run as this user (no capability kept)")
    parser.add_argument("--group", metavar="GROUP", help="with --user: this group (default: the user's own)")
    parser.add_argument("--metrics", nargs="?", const=DEFAULT_METRICS, type=metrics_address, metavar="ADDR:PORT",
                        help=f"serve Prometheus metrics on http://ADDR:PORT/metrics (default {DEFAULT_METRICS})")


class Service:
    def __init__(self, args: argparse.Namespace, snapshot: Callable[[], dict],
                 reparse: Callable[[list[str]], argparse.Namespace] | None = None) -> None:
        """`reparse`: the command line read again with the configuration file (SIGHUP); handed in by the
        command, so that the service never imports the parser (sensor/commands/parser.py)."""
        check_identity(args.user, args.group)
        self.args = args
        self.reparse = reparse
        self.notifier = Notifier()
        self.metrics = MetricsServer(args.metrics, snapshot) if args.metrics else None
        self.stopping = False
        self.reloading = False

    def opened(self, interface: str) -> None:
        """The captures are open: drop root, then tell systemd the sensor is ready."""
        drop_privileges(self.args.user, self.args.group)
        self.notifier.ready(f"capturing on {interface}")
        log.info("ready: capturing on %s", interface, extra={"fields": {"event": "ready", "interface": interface}})

    def tick(self, stopped: bool) -> None:
        if stopped and not self.stopping:
            self.stopping = True
            self.notifier.send("STOPPING=1", "STATUS=stopping")
            log.info("stopping", extra={"fields": {"event": "stopping"}})
        self.notifier.tick()

    def status(self, snapshot: dict) -> None:
        total = snapshot["total"]
        self.notifier.send(f"STATUS={total.get('packets', 0):,} packets, {total.get('hits', 0):,} hits, "
                           f"{sum(snapshot['drops'].values()):,} dropped, {snapshot['rules']['loaded']:,} rules")

    def reload_config(self) -> argparse.Namespace | None:
        """SIGHUP: the configuration file read again; the keys that can change live are applied by the caller,
        the others are named in a warning (they need a restart). None when the file is now invalid."""
        self.reloading = True
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", "STATUS=reloading")
        argv = getattr(self.args, "argv", None)
        if argv is None or self.args.config is None or self.reparse is None:
            return self.args
        try:
            fresh = self.reparse(argv)
        except config.ConfigError as err:
            log.error("configuration reload failed, old settings kept: %s", err,
                      extra={"fields": {"event": "config_reload", "outcome": "failure"}})
            return None
        changed = sorted(key for key, value in vars(fresh).items()
                         if key in vars(self.args) and getattr(self.args, key) != value and key != "argv")
        restart = [key for key in changed if key not in config.LIVE_KEYS]
        if restart:
            log.warning("configuration: %s changed but take effect only after a restart", ", ".join(restart),
                        extra={"fields": {"event": "config_reload", "restart_needed": ",".join(restart)}})
        log.info("configuration reloaded from %s", self.args.config,
                 extra={"fields": {"event": "config_reload", "outcome": "success",
                                   "applied": ",".join(k for k in changed if k in config.LIVE_KEYS) or "-"}})
        for key in changed:
            if key in config.LIVE_KEYS:
                setattr(self.args, key, getattr(fresh, key))
        if "verbose" in changed:
            logging.getLogger().setLevel(logging.DEBUG if self.args.verbose else logging.INFO)
        return self.args

    def reloaded(self) -> None:
        if self.reloading:
            self.reloading = False
            self.notifier.send("READY=1", "STATUS=reloaded")

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.notifier.close()
