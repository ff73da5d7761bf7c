"""The few exceptions that reach the user as one line and an exit code (docs/cli.md)."""


class SensorError(Exception):
    """An operational fault: bad option, bad rule line, unreadable file, endpoint in use.

    `exit_code` 2 means nothing could start; 1 means the run failed part-way.
    """

    exit_code = 2


class StartupError(SensorError):
    exit_code = 2


class RuleError(StartupError):
    """A rule line that is not a rule; the message starts with `file:line:`."""


class CaptureError(StartupError):
    """A capture that cannot be opened: missing, unreadable, not a capture, unsupported."""


class CaptureCutOff(SensorError):
    """A capture that ended in the middle of a frame; what came before it was processed."""

    exit_code = 1


class MixedLinkTypes(CaptureCutOff):
    """A pcapng file whose interfaces have different link types: libpcap reads one link type per file and stops
    at the first interface of another; what came before it was processed, as for a cut-off file."""


class OutputError(SensorError):
    """An output failed part-way (an --out file that cannot be written for a reason other than a full disk)."""

    exit_code = 1
