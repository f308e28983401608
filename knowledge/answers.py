"""Curated answers: approved replies an admin saved for a question (Dify's "annotation replies").

An admin saves an answer with one or more phrasings of its question and the documents it rests
on (:meth:`AnswerStore.add`, ``switchboard kb answers add``, the admin REST API). A customer
question whose embedding is at least ``min_similarity`` (cosine, 0..1) from one of those phrasings
gets the saved answer and its sources as they are, before any retrieval or generation:
:meth:`CuratedAnswers.match`.

Storage: one JSONL file, ``DATA_DIR/curated_answers.jsonl``, one answer per line::

    {"id": "ca-...", "questions": ["How do I reset my password?"], "answer": "Open ...",
     "sources": [{"doc_id": "kb-1042", "title": "Reset your password", "url": "https://..."}],
     "created_at": "2024-05-01T10:00:00+00:00", "author": "alice",
     "session_key": "webchat:site:dm:u42"}

``session_key`` (optional) is the conversation an answer was saved from: a data-subject erasure
of that conversation's customer deletes the answer (:mod:`knowledge.subjects`).

Writes replace the file atomically (a temporary file, then ``os.replace``) under an exclusive
``fcntl`` lock, so the CLI and a running server can both write; readers reload the file when it
was replaced, so an answer added from the CLI is served without a restart.
The file is local to one host: with several hosts, write on each or share the data directory.

Embeddings of the phrasings are kept in memory (computed on first use after a load, ~200
phrasings a second with the embedded MiniLM on 2 cores; unchanged phrasings are not embedded
again after a reload). With MiniLM, paraphrases of one question score 0.85-0.98 ("How do I reset
my password?" / "I forgot my password, what do I do?" 0.85) while questions that differ in what
they ask score lower ("Do you ship to Canada?" / "Do you ship to Mexico?" 0.71, "reset my
password" / "reset my PIN" 0.62): the default threshold, :data:`DEFAULT_MIN_SIMILARITY`, sits
between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.config import Settings
from bot.envelope import Citation
from knowledge.embed import Embedder
from knowledge.ingest import IngestError, jsonl_records

if TYPE_CHECKING:  # bot.agent loads litellm: only for type checking here
    from bot.agent import AgentReply, SupportAgent, TurnInput

log = logging.getLogger(__name__)

#: File name of the store in the data directory.
STORE_FILE = "curated_answers.jsonl"
#: Cosine similarity a question needs to get a curated answer (see the module docstring).
DEFAULT_MIN_SIMILARITY = 0.85
#: Longest answer text, in characters.
MAX_ANSWER_CHARS = 8000
#: Longest question phrasing, in characters.
MAX_QUESTION_CHARS = 1000


@dataclass(frozen=True, slots=True)
class CuratedAnswer:
    """One approved answer.

    Attributes:
        id: stable id (``ca-`` and 12 hex digits unless given).
        questions: the phrasings it answers (at least one).
        answer: the reply text (CommonMark), sent as it is.
        sources: the documents it rests on, cited with the reply.
        created_at: when it was saved (UTC).
        author: who saved it (an agent name, ``cli``, ``api``), when known.
        session_key: the conversation it was saved from, if it was (its questions may be the
            customer's words).
    """

    id: str
    questions: tuple[str, ...]
    answer: str
    sources: tuple[Citation, ...] = ()
    created_at: datetime | None = None
    author: str | None = None
    session_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored JSON object (see the module docstring)."""
        return {
            "id": self.id,
            "questions": list(self.questions),
            "answer": self.answer,
            "sources": [
                {"doc_id": c.doc_id, "title": c.title, "url": c.url} for c in self.sources
            ],
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "author": self.author,
            "session_key": self.session_key,
        }


@dataclass(frozen=True, slots=True)
class AnswerMatch:
    """A curated answer that matched a question.

    Attributes:
        answer: the curated answer.
        question: the stored phrasing that matched best.
        similarity: its cosine similarity with the asked question (0..1).
    """

    answer: CuratedAnswer
    question: str
    similarity: float

    @property
    def citations(self) -> list[Citation]:
        """The answer's sources as citations, with the match similarity as score."""
        return [
            c.model_copy(update={"score": round(self.similarity, 6)}) for c in self.answer.sources
        ]


def parse_answer(record: Any, *, source: str, author: str | None = None) -> CuratedAnswer:
    """Validate one answer record (a JSON object as in the module docstring).

    ``question`` (one string) is accepted for ``questions``; ``id``, ``sources``,
    ``created_at``, ``author`` and ``session_key`` are optional. A source may be a doc id string
    or an object with ``doc_id`` and optional ``title`` (default: the doc id) and ``url``.

    Raises:
        IngestError: naming ``source`` and the field at fault.
    """
    if not isinstance(record, dict):
        raise IngestError("an answer must be a JSON object", source=source)
    questions = record.get("questions", record.get("question"))
    if isinstance(questions, str):
        questions = [questions]
    if (
        not isinstance(questions, list)
        or not questions
        or not all(isinstance(q, str) and q.strip() for q in questions)
    ):
        raise IngestError('"questions" must be a non-empty list of strings', source=source)
    if any(len(q) > MAX_QUESTION_CHARS for q in questions):
        raise IngestError(f"a question is over {MAX_QUESTION_CHARS} characters", source=source)
    answer = record.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise IngestError('"answer" must be a non-empty string', source=source)
    if len(answer) > MAX_ANSWER_CHARS:
        raise IngestError(f'"answer" is over {MAX_ANSWER_CHARS} characters', source=source)
    sources: list[Citation] = []
    for item in record.get("sources") or []:
        if isinstance(item, str) and item:
            sources.append(Citation(doc_id=item, title=item))
        elif isinstance(item, dict) and isinstance(item.get("doc_id"), str) and item["doc_id"]:
            url = item.get("url")
            sources.append(
                Citation(
                    doc_id=item["doc_id"],
                    title=str(item.get("title") or item["doc_id"]),
                    url=str(url) if url else None,
                )
            )
        else:
            raise IngestError('each source needs a "doc_id"', source=source)
    answer_id = record.get("id")
    if answer_id is not None and (not isinstance(answer_id, str) or not answer_id.strip()):
        raise IngestError('"id" must be a non-empty string', source=source)
    session = record.get("session_key")
    if session is not None and (not isinstance(session, str) or not session.strip()):
        raise IngestError('"session_key" must be a non-empty string', source=source)
    created = record.get("created_at")
    try:
        created_at = datetime.fromisoformat(created) if isinstance(created, str) else None
    except ValueError as exc:
        raise IngestError(f'"created_at" is not ISO 8601: {exc}', source=source) from exc
    return CuratedAnswer(
        id=answer_id or f"ca-{secrets.token_hex(6)}",
        questions=tuple(q.strip() for q in questions),
        answer=answer.strip(),
        sources=tuple(sources),
        created_at=created_at or datetime.now(UTC),
        author=record.get("author") if isinstance(record.get("author"), str) else author,
        session_key=session,
    )


def read_answers_file(path: Path, *, author: str | None = None) -> list[CuratedAnswer]:
    """The answers of a JSONL file, one per non-blank line.

    Raises:
        IngestError: when the file cannot be read, or a line is not valid (names the line).
    """
    return [
        parse_answer(record, source=source, author=author)
        for source, record in jsonl_records(path)
    ]


class AnswerStore:
    """The curated answers file (blocking calls; wrap them in a thread from async code).

    Args:
        path: the JSONL file (created on first write).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_settings(cls, settings: Settings) -> AnswerStore:
        """The store in ``settings.data_dir``."""
        return cls(settings.data_dir / STORE_FILE)

    def stamp(self) -> tuple[int, int, int] | None:
        """``(inode, mtime_ns, size)`` of the file, None when it does not exist.

        Every write replaces the file, so a new inode tells a change even within one tick of
        the file system's clock.
        """
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    def load(self) -> list[CuratedAnswer]:
        """Every stored answer, oldest first (none when the file does not exist).

        Raises:
            IngestError: when the file is corrupt (names the line).
        """
        if not self.path.exists():
            return []
        return read_answers_file(self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _write(self, answers: Sequence[CuratedAnswer]) -> None:
        handle, name = tempfile.mkstemp(dir=self.path.parent, prefix=".answers-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                for a in answers:
                    out.write(json.dumps(a.to_json(), ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(name, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise

    def upsert(self, answers: Sequence[CuratedAnswer]) -> None:
        """Add ``answers``; one with the id of a stored answer replaces it in place.

        Raises:
            IngestError: when the stored file is corrupt.
            OSError: when the file cannot be written.
        """
        with self._locked():
            current = {a.id: a for a in self.load()}
            for a in answers:
                current[a.id] = a
            self._write(list(current.values()))

    def edit(
        self, change: Callable[[list[CuratedAnswer]], list[CuratedAnswer]]
    ) -> list[CuratedAnswer]:
        """Replace the stored answers by ``change(stored)``, atomically under the file's lock.

        Nothing is written when ``change`` returns them unchanged.

        Returns:
            The answers stored before.

        Raises:
            IngestError: when the stored file is corrupt.
            OSError: when the file cannot be written.
        """
        with self._locked():
            current = self.load()
            changed = change(list(current))
            if changed != current:
                self._write(changed)
            return current

    def remove(self, answer_id: str) -> bool:
        """Delete the answer ``answer_id``; False when there is none.

        Raises:
            IngestError: when the stored file is corrupt.
            OSError: when the file cannot be written.
        """
        with self._locked():
            current = self.load()
            kept = [a for a in current if a.id != answer_id]
            if len(kept) == len(current):
                return False
            self._write(kept)
            return True


class CuratedAnswers:
    """Matches customer questions against the stored curated answers.

    Args:
        store: where the answers are kept.
        embedder: the embedder of the knowledge base (any :class:`knowledge.embed.Embedder`).
        min_similarity: cosine similarity (0..1) a question needs to match.
    """

    def __init__(
        self,
        store: AnswerStore,
        embedder: Embedder,
        *,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
    ) -> None:
        self.store = store
        self._embedder = embedder
        self.min_similarity = min_similarity
        self._stamp: tuple[int, int, int] | None = None
        self._answers: list[CuratedAnswer] = []
        self._owners: list[int] = []  # phrasing row -> index in _answers
        self._phrasings: list[str] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._vectors: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, embedder: Embedder) -> CuratedAnswers:
        """The matcher over ``settings``' store and threshold."""
        return cls(
            AnswerStore.for_settings(settings),
            embedder,
            min_similarity=settings.curated_answer_min_similarity,
        )

    async def _refresh(self) -> None:
        """Reload the file and embed new phrasings when the file changed since the last call."""
        stamp = await asyncio.to_thread(self.store.stamp)
        if stamp == self._stamp:
            return
        async with self._lock:
            if stamp == self._stamp:
                return
            answers = await asyncio.to_thread(self.store.load)
            owners = [i for i, a in enumerate(answers) for _ in a.questions]
            phrasings = [q for a in answers for q in a.questions]
            missing = [q for q in dict.fromkeys(phrasings) if q not in self._vectors]
            for start in range(0, len(missing), 32):
                batch = missing[start : start + 32]
                for q, v in zip(batch, await self._embedder.embed(batch), strict=True):
                    self._vectors[q] = v
            self._vectors = {q: self._vectors[q] for q in phrasings}
            dimension = next(iter(self._vectors.values())).shape[0] if self._vectors else 0
            self._matrix = (
                np.stack([self._vectors[q] for q in phrasings])
                if phrasings
                else np.zeros((0, dimension), dtype=np.float32)
            )
            self._answers, self._owners, self._phrasings = answers, owners, phrasings
            self._stamp = stamp
            log.info("knowledge.curated_answers_loaded", extra={"answers": len(answers)})

    async def answers(self) -> list[CuratedAnswer]:
        """Every stored answer (reloaded when the file changed).

        Raises:
            knowledge.ingest.IngestError: when the stored file is corrupt.
            bot.errors.BackendUnavailable: when a remote embedder fails.
        """
        await self._refresh()
        return list(self._answers)

    async def match(self, question: str) -> AnswerMatch | None:
        """The curated answer for ``question``, or None when none is close enough.

        Call it with the customer's text before retrieval; when it returns a match, reply with
        ``match.answer.answer`` and ``match.citations`` and skip generation.

        Args:
            question: the customer's message text (cut to :data:`MAX_QUESTION_CHARS`).

        Returns:
            The best match at or above ``min_similarity``, else None (also when no answer is
            stored, which costs no embedding).

        Raises:
            knowledge.ingest.IngestError: when the stored file is corrupt.
            bot.errors.BackendUnavailable: when a remote embedder fails.
        """
        text = question.strip()[:MAX_QUESTION_CHARS]
        if not text:
            return None
        await self._refresh()
        if not self._phrasings:
            return None
        vector = (await self._embedder.embed([text]))[0]
        similarities = self._matrix @ vector
        best = int(np.argmax(similarities))
        similarity = float(similarities[best])
        if similarity < self.min_similarity:
            return None
        answer = self._answers[self._owners[best]]
        log.info(
            "knowledge.curated_answer",
            extra={"answer_id": answer.id, "similarity": round(similarity, 4)},
        )
        return AnswerMatch(answer, self._phrasings[best], similarity)


class CuratedFirstAgent:
    """A :class:`bot.agent.SupportAgent` that answers from curated answers before ``inner``.

    When the turn's text matches a curated answer, the reply is that answer with its sources
    and a "Talk to a person" button, and ``inner`` is not called (no retrieval, no model);
    otherwise ``inner`` answers. A store that cannot be read (a corrupt file, a remote
    embedder down) is logged and ``inner`` answers.

    Args:
        inner: the agent that answers everything else.
        curated: the matcher.
    """

    def __init__(self, inner: SupportAgent, curated: CuratedAnswers) -> None:
        self.inner = inner
        self.curated = curated

    async def respond(self, turn: TurnInput) -> AgentReply:
        """Answer ``turn`` (a :class:`bot.agent.TurnInput`); see the class docstring.

        Raises:
            bot.errors.LLMUnavailable: from ``inner``.
        """
        from bot.agent import AgentReply
        from bot.envelope import TALK_TO_HUMAN
        from bot.errors import SwitchboardError

        text = "\n".join(m.text.strip() for m in turn.messages if m.text.strip())
        try:
            match = await self.curated.match(text)
        except SwitchboardError as exc:
            log.warning("knowledge.curated_answers_failed", extra={"error": str(exc)})
            match = None
        if match is None:
            return await self.inner.respond(turn)
        return AgentReply(match.answer.answer, citations=match.citations, actions=[TALK_TO_HUMAN])
