"""Data-subject requests wherever the hub keeps data: database, lanes, registered parts.

The registered parts (:class:`SubjectHolder`) are what the composition root adds: the
knowledge base. :class:`SubjectRequests` is what the command line (``switchboard customer
export|erase``), the admin API (``/api/v1/admin/privacy``) and the console's Audit & privacy
page run, so all three find and erase the same things. The database scan
(:mod:`bot.store.subjects`) names the customer everywhere else: their sessions and their
identifiers (ids, e-mail, names, session keys; :class:`~bot.store.reflection.Needles`).

**Export** is one JSON document: the database's (:func:`bot.store.subjects.export_document`),
``queued_lane_state`` (messages received and stored but not answered yet, waiting in a lane or
in the turn answering them now: theirs, and others' that name them) and one section per holder
(``knowledge_base``). The ``privacy.export`` audit entry counts each part.

**Erasure** runs in this order, each step only if the one before succeeded:

1. the database scan (read-only);
2. the lanes (:meth:`bot.lanes.base.LaneQueue.purge`): their waiting messages are taken out,
   others' naming them scrubbed. A turn answering one of them now is never touched (that would
   corrupt the lane or run it twice): the request waits until it ended (at most ``wait_s``, by
   default the turn timeout plus a lease), so its reply is stored before step 4 deletes it and
   nothing erased is answered afterwards. If it does not end in time the request fails with
   :class:`~bot.errors.BackendUnavailable` before anything else is erased: try again;
3. each holder (the knowledge base's curated answers and documents);
4. the database, in one transaction, with the ``privacy.erase`` audit entry holding the counts
   of steps 2 and 3 (never an identifier);
5. the lanes again with ``final``: a message they sent meanwhile, and the enqueue marks (only
   now, or recovery would enqueue their stored messages again); then the rate-limit counters
   naming them. A customer still writing during the erasure can leave a new conversation:
   erase again afterwards.

Where the lanes are: a hub process passes its own (memory lanes live in that process; Redis
lanes are shared by every process); the command line, a separate process, reaches Redis lanes
through ``redis_url`` (:class:`bot.lanes.redis.purge.LanePurger`) but not the memory lanes of a
running hub: its report says so (``"lanes": {"reachable": false}``); erase through the admin API
or the console then, or while the hub is stopped (memory lanes keep nothing across a restart).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from bot.config import Settings
from bot.envelope import InboundMessage, SessionKey
from bot.errors import BackendUnavailable
from bot.lanes.base import LanePurge, LaneSelection, QueuedEntry
from bot.rate_limits import counters_naming, forget_counters
from bot.store.reflection import Needles
from bot.store.sql import SqlStore
from bot.store.subjects import ErasureReport, Subject, SubjectData, export_document

log = logging.getLogger(__name__)

LANES: Final = "lanes"
"""The ``elsewhere`` key of the lanes' counts."""
QUEUED: Final = "queued_lane_state"
"""The export document's key of the messages waiting in lanes."""
RATE_COUNTERS: Final = "rate_limit_counters"
"""The export's key of the rate-limit counters naming the subject (Redis lanes only)."""


@dataclass(frozen=True, slots=True)
class AboutSubject:
    """Whom a request is about, as the database scan found them.

    Attributes:
        subject: the customer as the request named them.
        sessions: their own sessions (direct conversations).
        needles: their identifiers (ids, e-mail addresses, names, session keys).
    """

    subject: Subject
    sessions: frozenset[SessionKey]
    needles: Needles

    def mentions(self, value: Any) -> bool:
        """Whether ``value`` (text or JSON) holds one of their identifiers."""
        return bool(self.needles) and self.needles.scrub(value) != value


@dataclass(frozen=True, slots=True)
class HolderErasure:
    """What a holder erased.

    Attributes:
        counts: what was deleted or rewritten, per kind (written in the audit entry).
        items: what changed, for the admin's report only (ids, titles, sources to fix).
    """

    counts: dict[str, int]
    items: list[dict[str, Any]] = field(default_factory=list)


class SubjectHolder(Protocol):
    """A part of a deployment, outside the database and the lanes, that may keep personal data.

    The composition root registers them (:func:`bot.compose.subject_holders`).
    """

    @property
    def name(self) -> str:
        """Its section in exports and reports (``knowledge_base``)."""

    async def export(self, about: AboutSubject) -> dict[str, Any]:
        """What it keeps about them, as JSON.

        Raises:
            bot.errors.BackendUnavailable: when it cannot be read.
        """

    async def erase(self, about: AboutSubject) -> HolderErasure:
        """Delete or irreversibly anonymize what it keeps about them.

        Raises:
            bot.errors.BackendUnavailable: when it cannot be changed (nothing else is erased).
        """


class SubjectLanes(Protocol):
    """The lanes' part (a :class:`bot.lanes.base.LaneQueue`, or a ``LanePurger``)."""

    async def queued(self, select: LaneSelection) -> list[QueuedEntry]:
        """See :meth:`bot.lanes.base.LaneQueue.queued`."""

    async def purge(self, select: LaneSelection, *, final: bool = False) -> LanePurge:
        """See :meth:`bot.lanes.base.LaneQueue.purge`."""


def lane_selection(about: AboutSubject) -> LaneSelection:
    """The queued messages ``about`` selects.

    Their sessions' messages and their own elsewhere (the sender as :mod:`bot.store.subjects`
    matches it) are theirs; in others', their identifiers are scrubbed from the text, the
    platform payload, attachment names and the sender's name and e-mail (never from ids and
    keys, which route the message).
    """
    subject, needles = about.subject, about.needles

    def owns(msg: InboundMessage) -> bool:
        by_id = subject.channel and subject.user_id and msg.channel == subject.channel
        if by_id and msg.sender.id == subject.user_id:
            return True
        return bool(subject.email and (msg.sender.email or "").lower() == subject.email.lower())

    def scrub(msg: InboundMessage) -> InboundMessage:
        sender = msg.sender.model_copy(
            update={
                "name": needles.scrub(msg.sender.name),
                "email": needles.scrub(msg.sender.email),
            }
        )
        files = tuple(
            a.model_copy(update={"name": needles.scrub(a.name)}) for a in msg.attachments
        )
        return msg.model_copy(
            update={
                "text": needles.scrub(msg.text),
                "raw": needles.scrub(msg.raw),
                "attachments": files,
                "sender": sender,
            }
        )

    return LaneSelection(about.sessions, owns, scrub)


def _names(about: AboutSubject, key: str) -> bool:
    """Whether a counter's key names them: an identifier inside it or as one ``/`` part."""
    return about.mentions(key) or any(part in about.needles.whole for part in key.split("/"))


class SubjectRequests:
    """Export and erase one customer everywhere (see the module docstring).

    Args:
        store: the SQL store.
        settings: ``lane_backend`` (named in exports and reports), ``turn_timeout_s`` and
            ``lane_lease_s`` (how long a turn may hold their messages).
        lanes: the lanes to search and purge; None when this process cannot reach them.
        holders: the registered parts (:func:`bot.compose.subject_holders`).
        counters: a Redis client of the rate-limit counters (Redis lanes), or None.
        wait_s: seconds erasure waits for a running turn that holds their messages (default
            the turn timeout plus a lease: no turn outlives that).
        poll_s: seconds between two looks at that turn.
    """

    def __init__(
        self,
        store: SqlStore,
        *,
        settings: Settings,
        lanes: SubjectLanes | None,
        holders: Sequence[SubjectHolder] = (),
        counters: Any = None,
        wait_s: float | None = None,
        poll_s: float = 0.1,
    ) -> None:
        self.store = store
        self.lanes = lanes
        self.lanes_backend = settings.lane_backend
        self.holders = list(holders)
        self.counters = counters
        self.wait_s = (
            wait_s if wait_s is not None else settings.turn_timeout_s + settings.lane_lease_s
        )
        self.poll_s = poll_s

    async def _about(self, subject: Subject) -> tuple[SubjectData, AboutSubject]:
        data = await self.store.collect_subject(subject)
        return data, AboutSubject(subject, frozenset(data.sessions), data.needles)

    async def export(self, subject: Subject, *, actor: str) -> dict[str, Any]:
        """Everything stored about ``subject``, as one JSON document; audited.

        Returns:
            :func:`bot.store.subjects.export_document`'s keys, ``queued_lane_state``
            (``{"backend", "reachable", "messages": [QueuedEntry.as_json()...]}``) and one key
            per holder.

        Raises:
            bot.errors.BackendUnavailable: when the database, the lanes or a holder cannot be
                read.
        """
        data, about = await self._about(subject)
        queued: list[QueuedEntry] = []
        if self.lanes is not None:
            queued = await self.lanes.queued(lane_selection(about))
        sections = {h.name: await h.export(about) for h in self.holders}
        counts = {LANES: {"queued": len(queued)}}
        for name, section in sections.items():
            counts[name] = {k: len(v) for k, v in section.items() if isinstance(v, list)}
        await self.store.export_subject(subject, actor=actor, data=data, elsewhere=counts)
        doc = export_document(subject, data)
        doc[QUEUED] = {
            "description": "messages received and stored but not answered yet, waiting in a "
            "lane (or in the turn answering them now): theirs, and others' naming them",
            "backend": self.lanes_backend,
            "reachable": self.lanes is not None,
            "messages": [e.as_json() for e in queued],
        }
        if self.counters is not None:
            doc[RATE_COUNTERS] = {
                "description": "rate-limit counters (Redis) whose key holds one of their "
                "identifiers; each counts their recent messages and expires by itself",
                "counters": await counters_naming(self.counters, lambda k: _names(about, k)),
            }
        doc.update(sections)
        return doc

    async def erase(self, subject: Subject, *, actor: str) -> ErasureReport:
        """Delete or anonymize ``subject`` everywhere (the module docstring's steps); audited.

        Raises:
            bot.errors.BackendUnavailable: when a part cannot be reached, or a turn answering
                them did not end within ``wait_s`` (nothing after that step was erased).
        """
        data, about = await self._about(subject)
        select = lane_selection(about)
        lanes = await self._purge_lanes(select)
        done: dict[str, HolderErasure] = {}
        for holder in self.holders:
            done[holder.name] = await holder.erase(about)
        counters = 0
        if self.counters is not None:
            counters = await forget_counters(self.counters, lambda k: _names(about, k))
        lane_counts = {
            "removed": lanes.removed,
            "scrubbed": lanes.scrubbed,
            "lanes_dropped": lanes.lanes_dropped,
            "rate_counters": counters,
        }
        counts = {LANES: dict(lane_counts), **{n: h.counts for n, h in done.items()}}
        report = await self.store.erase_subject(subject, actor=actor, data=data, elsewhere=counts)
        if self.lanes is not None:
            late = await self.lanes.purge(select, final=True)
            lane_counts["removed"] += late.removed
            lane_counts["scrubbed"] += late.scrubbed
            lane_counts["lanes_dropped"] += late.lanes_dropped
            lane_counts["marks_deleted"] = late.keys_deleted
        elsewhere: dict[str, Any] = {
            LANES: {
                "backend": self.lanes_backend,
                "reachable": self.lanes is not None,
                **lane_counts,
            }
        }
        for name, erased in done.items():
            elsewhere[name] = {**erased.counts, "items": erased.items}
        return replace(report, elsewhere=elsewhere)

    async def _purge_lanes(self, select: LaneSelection) -> LanePurge:
        """Purge until no running turn holds a selected message (bounded by ``wait_s``)."""
        if self.lanes is None:
            return LanePurge()
        total = LanePurge()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while True:
            total = total + await self.lanes.purge(select)
            if total.in_flight == 0:
                return total
            if loop.time() >= deadline:
                log.warning("privacy.erase_waited", extra={"in_flight": total.in_flight})
                raise BackendUnavailable(
                    "a turn answering this customer is still running: try again in a minute"
                )
            await asyncio.sleep(self.poll_s)
