"""The engine's one exception hierarchy.

Every error the engine raises on purpose derives from :class:`ReplicationError`, so an
embedder can catch one type. Each class says when it is raised and what to do about it.
Messages follow one shape: the argument, its value, what was expected, and the choices
there are (``f"block_bytes={value!r} must be a power of two between 512 and 1 MiB"``).

Caller input is validated with these exceptions, never with ``assert`` (``python -O``
strips asserts); asserts guard *our* invariants only.
"""

from __future__ import annotations


class ReplicationError(Exception):
    """Base of every error the engine raises on purpose.

    Catch this to handle any refusal or failure of the engine; the message names what
    was wrong and what is allowed.
    """


class InvalidConfiguration(ReplicationError):
    """A configuration value or argument is malformed or out of range.

    Raised before anything is written. Fix the value named in the message.
    """


class InvalidName(InvalidConfiguration):
    """A site, VM or disk name could escape its storage root or is not portable.

    Names must be 1 to 64 characters of letters, digits, ``-``, ``_`` and ``.``, must
    not start with ``.``, and may not contain ``/``, ``\\`` or NUL. Choose another name.
    """


class TransitionNotAllowed(ReplicationError):
    """The protection lifecycle (the model) refuses this operation in the current phase.

    The message is the model's: the VM, the operation, the phase, the guard that failed
    and the operations allowed there. Do one of those first.
    """


class RecoveryPointNotFound(ReplicationError):
    """A recovery point was asked for that the catalogue does not hold.

    Points are merged away past the retention count and all deleted by a commit; list
    the catalogue with ``status()`` and choose one of those.
    """


class CorruptRecord(ReplicationError):
    """A change log or a shipped cycle failed its integrity checks.

    Raised when a record's CRC32C, length, sequence number or header does not match. The
    damaged data is never applied; the VM needs resynchronisation.
    """


class LogMismatch(CorruptRecord):
    """A change log belongs to another disk or another replication epoch.

    Raised instead of applying it. Usually a stale log left over from before a disable
    or a failover: resynchronise, or remove the stray file.
    """


class DiskRangeError(ReplicationError):
    """A read or write falls outside the virtual disk (negative offset, past the end).

    Nothing was written. Keep ``0 <= offset`` and ``offset + length <= size_bytes``.
    """


class StorageFull(ReplicationError):
    """The storage under a site has no room left (ENOSPC) for the operation.

    Nothing was half-applied: the operation was refused or rolled back. Free space, then
    retry; replication resumes from where it stopped.
    """


class TransportError(ReplicationError):
    """The link to the other site failed or refused a transfer.

    The cycle did not apply; logs keep growing at the source. Retry when the link is
    back.
    """


class DamagedState(ReplicationError):
    """A file the engine keeps is damaged, missing or not what it should be.

    Raised for the site's control state, a replica store's catalogue or intent record,
    a VM's folder or disk image, instead of a bare ``OSError``, ``ValueError`` or
    SQLite error, and never hidden behind a healthy status. The message names the file
    and what was found. Nothing was changed: restore the file (or move the site aside
    and protect the VM afresh).
    """


class SiteLocked(ReplicationError):
    """Another engine (another process, or another object in this one) owns the site.

    Each site's storage root has one owner at a time; the message names the holder
    (process id, host, since when). Stop that engine first, or open another site. The
    lock is the operating system's, so a crashed holder releases it by dying.
    """


class SiteUnreachable(TransportError):
    """A site the operation needs is down: nothing of it was read or changed.

    Raised instead of reading a site the engine cannot reach (its hosts crashed), so no
    figure is ever made up from one. The site comes back with ``recover_site``.
    """


class ShutdownRefused(ReplicationError):
    """The source VM did not shut down (its guest refused, or its VMM is unreachable).

    A planned failover stops there (nothing changed); an unplanned one goes on from
    the newest point that reached the target, and reports the loss as a bound.
    """


class AuthenticationFailed(TransportError):
    """The replica server could not tell who is calling, or would not believe it.

    No client certificate, one from another CA or out of its validity, a missing,
    forged or expired Kerberos ticket. Nothing was read or written. The message names
    what was wrong; fix the credentials and retry.
    """


class NotAuthorised(TransportError):
    """The caller is authenticated, but the replica server does not serve it.

    A primary server that is not on the server's list, or a request for something
    outside the caller's own storage location. Nothing was read or written. Add the
    primary to the server's configuration, or address the server it is listed on.
    """


class InvalidPlan(InvalidConfiguration):
    """A recovery plan cannot be defined or run as given.

    Raised before anything runs: an empty plan or group, a VM in two groups, a VM the
    engine does not know (or whose files are damaged), an unprotected VM for an
    operation that needs protection. The message lists every problem found and what
    is allowed; fix the plan (or enable protection first) and run it again.
    """


class PlanFailed(ReplicationError):
    """A VM of a recovery plan failed a step, so the plan stopped before the next group.

    The message names the group, the VM, the step and the cause (the engine's own
    error, also this exception's ``__cause__``); ``job_id`` is the plan's job, now
    failed. Fix the cause (the model's message says what is allowed), then resume the
    job: every step that already succeeded is skipped.
    """

    def __init__(self, message: str, *, job_id: int) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobNotFound(ReplicationError):
    """A job id was asked for that the job store does not hold.

    Job ids are handed out by the store when a job starts, and never reused; list the
    jobs the store holds (``JobStore.jobs()``) and choose one of those.
    """


class JobTransitionNotAllowed(ReplicationError):
    """The job's state does not allow the operation (resume a succeeded job, abandon a
    running one, record a step of a finished one).

    Nothing was changed. The message names the job, its state and the states the
    operation is allowed from.
    """


class JobStoreLocked(SiteLocked):
    """Another orchestrator (another process, or another object in this one) has the
    job store open.

    A job store has one owner at a time, so that a job it shows running really runs;
    the message names the holder (process id, host, since when). Stop that
    orchestrator first, or open another store. The lock is the operating system's: a
    crashed holder releases it by dying.
    """


class InvalidPolicy(InvalidConfiguration):
    """A replication policy cannot be made, or cannot be honoured by this engine.

    Raised when the policy is made (a frequency the product does not offer, more
    additional recovery points than 24 hours hold, an app-consistent interval outside
    1 to 12 hours or longer than the points kept) and when a scheduler is given it for
    a VM whose engine keeps too few recovery points. The message lists every problem
    and the values allowed: fix the policy, or open the engine with a larger
    ``retention_count``.
    """
