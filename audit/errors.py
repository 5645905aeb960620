"""The project's own exceptions and the exit codes the CLI maps them to.

Library code raises these; only the CLI turns them into an ``Error: ...``
line and an exit code, never a traceback.  Exit codes are part of the
public contract (CI pipelines branch on them), so they live here, once.
"""

from __future__ import annotations

EXIT_OK = 0
#: ``audit gate`` (or ``audit run --policy``): at least one rule failed.
EXIT_GATE_FAILED = 1
#: Usage or input error: bad option, invalid dataset, policy or results file.
EXIT_INPUT_ERROR = 2
#: A target or service stopped the run (quota, unreachable API, budget
#: spent).  Everything computed so far is in the cache: rerun to resume.
EXIT_TARGET_STOPPED = 3
#: An internal error: a bug in this tool, not a problem with the input.  The
#: message names what failed and the log file that holds the traceback.
EXIT_INTERNAL_ERROR = 4
#: The run was interrupted (Ctrl-C).  Rerun the same command to resume.
EXIT_INTERRUPTED = 130
#: Stopped by a signal that asks a program to end (SIGTERM: 143, SIGHUP: 129): 128 + its number,
#: as a shell reports a signal.  Rerun the same command to resume.
EXIT_SIGNAL_BASE = 128


class AuditError(Exception):
    """Base class of every error the tool reports to its user."""

    exit_code = EXIT_INPUT_ERROR


class InputError(AuditError):
    """Bad input from the user: options, dataset, manifest, policy, results."""

    exit_code = EXIT_INPUT_ERROR


class DatasetError(InputError):
    """A dataset folder or manifest that cannot be used as it is."""


class CacheError(InputError):
    """A cache file that is corrupt, foreign, read-only, or from an incompatible version."""


class OutputError(InputError):
    """A place the tool must write to that cannot be written: no permission,
    a read-only file system, a full disk.  The message names the path and the fix.

    It is the user's environment, not their data, but like bad input it is
    theirs to fix, so it shares the input error's exit code.
    """


class TargetError(AuditError):
    """A target that cannot be used (missing dependency, failed self-check)."""

    exit_code = EXIT_INPUT_ERROR


class TargetStopped(AuditError):
    """A target stopped answering for a reason the user must act on.

    Raised, for example, when a cloud API's hourly limit is reached or the
    ``--max-requests`` budget is spent.  The message says how to resume.
    """

    exit_code = EXIT_TARGET_STOPPED

    def __init__(self, *args: object, partial_outcomes: list | None = None) -> None:
        super().__init__(*args)
        #: A cloud target's answers for the batch in flight when it stopped (paid for: keep them).
        self.partial_outcomes: list = list(partial_outcomes or [])


class DownloadStopped(AuditError):
    """A download that kept failing (unreachable server, broken connections) until its retries ran out.

    What arrived is kept in a ``.part`` file: rerunning the same command
    resumes from there, so it shares the exit code of a stopped target.
    """

    exit_code = EXIT_TARGET_STOPPED


class ClusterError(InputError):
    """A Dask scheduler that cannot be reached, or workers that cannot run the embed stage."""


class ClusterStopped(TargetStopped):
    """The cluster went away mid-run (scheduler lost, no worker left).

    Everything embedded so far is in the cache: start the cluster again and
    rerun to resume.
    """


class PolicyError(InputError):
    """A policy file that is malformed or names unknown metrics or groups."""


class ResultsError(InputError):
    """A results.json that is missing, malformed or of an unknown schema."""
