"""Exit codes and the usage error every `slawatch` command shares."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # the work failed: a store or mail server error
EXIT_USAGE = 2  # a bad argument or config: running it again as it is fails again
EXIT_UNKNOWN = 3  # `slawatch probe`, a Nagios plugin: the state could not be determined


class UsageError(Exception):
    """A bad argument or a name the config does not know: the command prints it and exits EXIT_USAGE."""
