"""The LLM agent: a chat model through litellm, with a bounded tool-calling loop and streaming.

The prompt is built by :mod:`bot.agent.prompt`, citations are resolved by
:mod:`bot.agent.citations`, the tools come from :mod:`bot.agent.tools`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import litellm
import openai
from litellm.router import Router
from litellm.types.router import RouterRateLimitError
from pydantic import ValidationError

from bot import tracing
from bot.agent.base import (
    ESCALATE_AGENT_TOOL,
    ESCALATE_NO_ANSWER,
    ESCALATE_TOOL_LOOP,
    AgentReply,
    StreamFn,
    TurnInput,
)
from bot.agent.citations import Sources, strip_citation_markers
from bot.agent.guard import TurnGuard
from bot.agent.prompt import (
    DataMarks,
    compact,
    fixed_messages,
    history_messages,
    overflow_note,
    system_rules,
)
from bot.agent.redaction import TurnRedaction, load_redactor, redaction_wanted
from bot.agent.tokens import TOKEN_SAFETY, count_tokens
from bot.agent.tools import tool_spec
from bot.agent.usage import UsageFn, report_usage
from bot.config import Settings
from bot.envelope import TALK_TO_HUMAN
from bot.errors import BackendUnavailable, ConfigError, Forbidden, LLMUnavailable, SwitchboardError
from bot.privacy.injection import DataSource
from bot.privacy.leak import PromptEchoCheck
from bot.retrieval import Passage
from bot.tools import Tool, ToolContext
from bot.tracing import Span

log = logging.getLogger(__name__)

MAX_TOOL_RESULT_CHARS = 6000
"""A tool result handed back to the model is cut to this many characters."""

WITHHELD_ANSWER = (
    "Sorry, I can't share that. I'm happy to help with a question about our products or your "
    "account, or to put you in touch with a person from our team."
)
"""Sent instead of an answer that echoes the system prompt."""

_LLM_ERRORS: tuple[type[BaseException], ...] = (
    openai.APIError,
    TimeoutError,
    RouterRateLimitError,
)


@dataclass(slots=True)
class _ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class _Completion:
    text: str
    tool_calls: list[_ToolCall]
    tokens: int


class LLMAgent:
    """The support agent on a chat model through litellm.

    One turn: pre-fetch passages for the customer's words (numbered sources in the system
    prompt), fit the history into the context window, then call the model with the tools at
    most ``agent_max_tool_rounds`` times plus once for the final answer. Tool errors are
    returned to the model as tool results. Citations are the documents the answer cites
    (``[n]``) or, when it cites none, the sources that share its words; the ``[n]`` markers are
    removed from the text (channels render citations themselves).

    Streaming (``turn.stream`` set): each model call streams; ``turn.stream`` receives the
    cumulative text of the current call (markers removed), so text the model writes before a
    tool call is replaced by the next call's answer.

    Privacy and injection defences (docs/security.md, "PII redaction and injection defences"):
    every request is redacted by a :class:`~bot.agent.redaction.TurnRedaction` (values become
    tokens such as ``<EMAIL_1>``; the answer, streamed text and tool-call arguments get the
    values back here, at the edge); the customer's text, passages, the history digest and tool
    results are wrapped in data markers (:class:`~bot.agent.prompt.DataMarks`); when the
    injection detector scores the customer's text or a passage at or above
    ``injection_threshold``, the turn answers without tools and flagged passages are left out;
    an answer echoing the system prompt is replaced by :data:`WITHHELD_ANSWER`.

    Escalation reasons: ``agent_tool`` (the model called ``escalate_to_human``), ``no_answer``
    (empty answer), ``tool_loop`` (still calling tools after ``agent_max_tool_rounds``).

    Models: ``settings.llm_model`` with ``settings.llm_fallbacks`` in order (a litellm Router,
    ``llm_max_retries`` retries per model, ``llm_timeout_s`` seconds per attempt). The
    ``llm_api_base`` and ``llm_api_key`` apply to the primary model and to fallbacks of the
    same provider prefix (e.g. ``openai/``); other providers read litellm's usual environment
    variables.
    """

    def __init__(
        self, settings: Settings, tools: Sequence[Tool], *, on_usage: UsageFn | None = None
    ) -> None:
        """Build the router.

        ``on_usage`` receives each call's tokens and cost (purpose ``answer``,
        :mod:`bot.agent.usage`).

        Raises:
            ConfigError: when ``settings.llm_model`` is not set, or a ``pii_entities`` or
                ``pii_channel_entities`` list names an unknown type.
        """
        if not settings.llm_model:
            raise ConfigError("LLMAgent needs llm_model")
        self._settings = settings
        self._model = settings.llm_model
        self._tools = {t.name: t for t in tools}
        self._specs = [tool_spec(t) for t in tools]
        self._specs_tokens = count_tokens(json.dumps(self._specs)) if self._specs else 0
        self._router = self._make_router(settings)
        self._redacts = redaction_wanted(settings)
        self._echo = PromptEchoCheck([system_rules(settings)])
        self._on_usage = on_usage

    @staticmethod
    def _make_router(settings: Settings) -> Router:
        primary = settings.llm_model or ""
        provider = primary.split("/", 1)[0] if "/" in primary else None
        model_list: list[dict[str, Any]] = []
        for model in [primary, *settings.llm_fallbacks]:
            params: dict[str, Any] = {"model": model}
            same = model == primary or (provider and model.startswith(provider + "/"))
            if same and settings.llm_api_base:
                params["api_base"] = settings.llm_api_base
            if same and settings.llm_api_key is not None:
                params["api_key"] = settings.llm_api_key.get_secret_value()
            model_list.append({"model_name": model, "litellm_params": params})
        fallbacks = [{primary: list(settings.llm_fallbacks)}] if settings.llm_fallbacks else []
        router: Router = Router(  # litellm's constructor is untyped (a decorated __init__)
            model_list=model_list,
            fallbacks=fallbacks,
            num_retries=settings.llm_max_retries,
            timeout=settings.llm_timeout_s,
            stream_timeout=settings.llm_timeout_s,
        )
        return router

    @property
    def _budget(self) -> int:
        """Prompt tokens available: the window minus the answer and the tool schemas."""
        s = self._settings
        return int(s.llm_context_window_tokens * TOKEN_SAFETY) - (
            s.llm_max_answer_tokens + self._specs_tokens
        )

    async def respond(self, turn: TurnInput) -> AgentReply:
        """Answer one turn (see the class docstring).

        Raises:
            bot.errors.LLMUnavailable: every model failed or timed out.
        """
        s = self._settings
        ctx = turn.tools
        extra = {"session_key": turn.session_key, "channel": turn.channel}
        sources = Sources()
        marks = DataMarks.for_channel(turn.channel)
        redactor = await load_redactor(s) if self._redacts else None
        privacy = TurnRedaction(redactor, s.pii_entities_for(turn.channel))
        query = "\n".join(m.text for m in turn.messages if m.text.strip())
        guard = TurnGuard(s.injection_threshold, extra)
        guard.customer([m.text for m in turn.overflow] + [query])
        # Texts the prompt may clip are redacted first (a clipped value might escape
        # detection), in a fixed order: the stored history oldest first, then this turn, so a
        # turn resumed by another worker issues the same tokens (bot.agent.redaction).
        stored = await turn.history()
        await privacy.feed([*(m.text for m in stored), query, *(m.text for m in turn.overflow)])
        stored = [dataclasses.replace(m, text=privacy.redacted(m.text)) for m in stored]
        overflow = [m.model_copy(update={"text": privacy.redacted(m.text)}) for m in turn.overflow]
        query = privacy.redacted(query)
        history = history_messages(turn, stored, s.agent_history_messages, marks)
        passages: list[Passage] = []
        if query.strip():
            try:
                passages = await ctx.retriever.search(query[:2000], top_k=s.retrieve_top_k)
            except BackendUnavailable as exc:
                log.warning("agent.retrieve_failed", extra={**extra, "error": _kind(exc)})
        passages = guard.passages(passages)
        user_text = query or "(the customer sent no text)"
        preamble = overflow_note(overflow, marks) if overflow else ""
        system, user = fixed_messages(
            s, self._budget, passages, sources, user_text, marks, preamble=preamble
        )
        convo: list[dict[str, Any]] = []  # this turn's assistant tool calls and tool results
        tokens = 0
        text = ""
        rounds = 0
        finished = False
        while rounds <= s.agent_max_tool_rounds:
            # A turn that looks like an injection attack answers without tools.
            use_tools = bool(self._specs) and not guard.suspect
            final_round = rounds == s.agent_max_tool_rounds
            messages = compact(
                system,
                history,
                user,
                convo,
                budget=self._budget,
                session_key=turn.session_key,
                marks=marks,
            )
            done = await self._complete(
                await privacy.outbound(messages),
                tools=use_tools,
                forbid_tools=final_round,
                stream=turn.stream,
                privacy=privacy,
            )
            tokens += done.tokens
            text = done.text
            if not done.tool_calls or not use_tools:
                finished = True
                break
            if final_round:
                break
            rounds += 1
            convo.append(
                {
                    "role": "assistant",
                    "content": done.text or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in done.tool_calls
                    ],
                }
            )
            for call in done.tool_calls:
                content = await self._run_tool(call, ctx, sources, extra, privacy, marks, guard)
                convo.append({"role": "tool", "tool_call_id": call.id, "content": content})
        answer = strip_citation_markers(privacy.restore(text))
        escalate: str | None = None
        if ctx.escalated:
            escalate = ESCALATE_AGENT_TOOL
        elif not finished:
            escalate = ESCALATE_TOOL_LOOP
            log.warning("agent.tool_loop", extra={**extra, "rounds": rounds})
        elif not answer:
            escalate = ESCALATE_NO_ANSWER
        cited = sources.referenced(text) or sources.supporting(answer)
        citations = [c.citation for c in cited[: s.max_citations]]
        actions = [] if escalate else [TALK_TO_HUMAN]
        if not finished and not ctx.escalated:
            answer = ""
            citations = []
        if answer and self._echo.echoes(answer):
            log.warning("agent.answer_withheld", extra={**extra, "reason": "prompt_echo"})
            answer, citations, actions = WITHHELD_ANSWER, [], [TALK_TO_HUMAN]
        log.info(
            "agent.turn_done",
            extra={
                **extra,
                "rounds": rounds,
                "tokens": tokens,
                "escalate": escalate,
                "citations": [c.doc_id for c in citations],
                "redacted": len(privacy.vault),
                "injection_suspected": guard.suspect,
            },
        )
        return AgentReply(answer, citations, actions, escalate, tokens)

    # --- model calls ----------------------------------------------------------------------

    async def _complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: bool,
        forbid_tools: bool,
        stream: StreamFn | None,
        privacy: TurnRedaction,
    ) -> _Completion:
        """One chat completion (streamed when ``stream`` is set).

        ``messages`` are already redacted; the completion comes back in token form (streamed
        text is restored for ``stream`` only).

        Raises:
            bot.errors.LLMUnavailable: every model failed.
        """
        s = self._settings
        kwargs: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "temperature": s.llm_temperature,
            "max_tokens": s.llm_max_answer_tokens,
            "drop_params": True,
            # Our tools are plain functions: skip litellm's MCP bridge, which needs the optional
            # ``mcp`` package whenever tools are passed (litellm strips this internal flag
            # before calling the provider).
            "_skip_mcp_handler": True,
        }
        if tools:
            kwargs["tools"] = self._specs
            kwargs["tool_choice"] = "none" if forbid_tools else "auto"
        try:
            model = {"gen_ai.request.model": self._model}
            with tracing.span(Span.LLM_CALL, attributes=model) as span:
                if stream is None:
                    response = await self._router.acompletion(**kwargs)
                else:
                    response = await self._stream(kwargs, stream, privacy)
                if span is not None:
                    _record_usage(span, response)
            await report_usage(self._on_usage, response, model=self._model, purpose="answer")
        except _LLM_ERRORS as exc:
            # Provider errors may quote the request: only the type and status are logged.
            log.warning(
                "agent.llm_failed",
                extra={
                    "model": self._model,
                    "error": _kind(exc),
                    "status": getattr(exc, "status_code", None),
                },
            )
            raise LLMUnavailable(f"every model failed: {type(exc).__name__}") from exc
        return _completion_of(response)

    async def _stream(
        self, kwargs: dict[str, Any], stream: StreamFn, privacy: TurnRedaction
    ) -> Any:
        """Stream one completion, calling ``stream`` with the restored, cleaned text so far.

        Tokens are restored as they complete (one split across chunks is held back); once
        the text echoes the system prompt nothing more is shown (the answer is withheld).

        Returns:
            The completion rebuilt from the chunks (tool calls included), in token form.
        """
        chunks: list[Any] = []
        restorer = privacy.stream()
        text = ""
        shown = ""
        echoed = False
        response = await self._router.acompletion(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in response:
            chunks.append(chunk)
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta and not echoed:
                text += restorer.feed(delta)
                echoed = self._echo.echoes(text)
                visible = strip_citation_markers(text, partial=True)
                if not echoed and visible.strip() and visible != shown:
                    shown = visible
                    await stream(visible)
        built = litellm.stream_chunk_builder(chunks, messages=kwargs["messages"])
        if built is None:
            raise LLMUnavailable("the model's stream was empty")
        final = strip_citation_markers(text + restorer.flush())
        if final and final != shown and not (echoed or self._echo.echoes(final)):
            await stream(final)
        return built

    async def _run_tool(
        self,
        call: _ToolCall,
        ctx: ToolContext,
        sources: Sources,
        extra: dict[str, Any],
        privacy: TurnRedaction,
        marks: DataMarks,
        guard: TurnGuard,
    ) -> str:
        """Run one tool call; the tool message content (errors included, never raised).

        The model's arguments get their real values back (tools act on them); the result is
        screened by ``guard`` (a flagged result is withheld and the turn loses its tools),
        marked as data (:data:`~bot.privacy.injection.DataSource.TOOL`) and redacted with the
        rest of the next request.
        """
        tool = self._tools.get(call.name)
        if tool is None:  # audited too: every call the model makes leaves an entry
            await _audit(ctx, call.name[:100], "unknown_tool")
            return _tool_error("unknown_tool", f"there is no tool {call.name!r}")
        try:
            raw = json.loads(call.arguments or "{}")
        except json.JSONDecodeError:
            await _audit(ctx, call.name, "invalid_arguments")
            return _tool_error("invalid_arguments", "the arguments are not a JSON object")
        try:
            args = tool.args_model.model_validate(privacy.restore_data(raw))
        except ValidationError as exc:
            await _audit(ctx, call.name, "invalid_arguments")
            details = exc.errors(include_url=False, include_context=False, include_input=False)
            return _tool_error("invalid_arguments", json.dumps(details, default=str))
        log_extra = {**extra, "tool": call.name}
        try:
            with tracing.span(Span.TOOL_CALL, attributes={"gen_ai.tool.name": call.name}):
                result = await tool(args, ctx)
        except Forbidden as exc:
            log.info("agent.tool_refused", extra={**log_extra, "error": _kind(exc)})
            await _audit(ctx, call.name, "refused")
            return marks(_tool_error("refused", f"not allowed: {exc}"), DataSource.TOOL)
        except SwitchboardError as exc:
            log.warning("agent.tool_failed", extra={**log_extra, "error": _kind(exc)})
            await _audit(ctx, call.name, "failed")
            return marks(_tool_error("failed", str(exc)), DataSource.TOOL)
        except Exception:  # a plugin's bug must not end the turn: the model is told
            log.exception("agent.tool_crashed", extra=log_extra)
            await _audit(ctx, call.name, "failed")
            return _tool_error("failed", f"tool {call.name!r} failed unexpectedly")
        log.info("agent.tool_done", extra=log_extra)
        await _audit(ctx, call.name, "done")
        body = json.dumps(result.content, ensure_ascii=False, default=str)
        body = await privacy.redact(body)  # before the cut, which could split a value
        if len(body) > MAX_TOOL_RESULT_CHARS:
            body = body[:MAX_TOOL_RESULT_CHARS] + "…(truncated)"
        data = marks(guard.tool_result(call.name, body), DataSource.TOOL)
        if not result.citations:
            return data
        ctx.citations.extend(result.citations)
        texts = _texts_by_doc(result.content)
        refs = []
        for c in result.citations:
            src = sources.add(c, texts.get(c.doc_id, body))
            refs.append(f"[{src.number}] {c.title} (doc_id {c.doc_id})")
        return data + "\n\nCite these documents as: " + "; ".join(refs)


def llm_router(settings: Settings) -> Router:
    """The litellm Router the agent uses (primary model, fallbacks, retries, timeouts).

    Other callers of the model (the console's copilot) go through it, so they share the
    agent's models, credentials and retry policy.
    """
    return LLMAgent._make_router(settings)


async def _audit(ctx: ToolContext, tool: str, outcome: str) -> None:
    """Append the call to the audit log; a failed append is logged, never ends the turn."""
    if ctx.audit is None:
        return
    try:
        await ctx.audit(tool, outcome)
    except Exception:
        log.exception("agent.tool_audit_failed", extra={"tool": tool, "outcome": outcome})


def _tool_error(kind: str, message: str) -> str:
    return json.dumps({"error": kind, "message": message})


def _kind(exc: BaseException) -> str:
    """What a log may say about an error: its type, never its message (it may quote data)."""
    return type(exc).__name__


def _texts_by_doc(content: Any) -> dict[str, str]:
    """Passage texts per ``doc_id`` when a tool result lists ``passages`` (search results)."""
    out: dict[str, str] = {}
    passages = content.get("passages") if isinstance(content, dict) else None
    if isinstance(passages, list):
        for p in passages:
            if isinstance(p, dict) and isinstance(p.get("doc_id"), str):
                out[p["doc_id"]] = out.get(p["doc_id"], "") + "\n" + str(p.get("text", ""))
    return out


def _record_usage(span: Any, response: Any) -> None:
    """Token counts and the answering model on an LLM span (OpenTelemetry GenAI names)."""
    usage = getattr(response, "usage", None)
    span.set_attribute("gen_ai.usage.input_tokens", int(getattr(usage, "prompt_tokens", 0) or 0))
    output = int(getattr(usage, "completion_tokens", 0) or 0)
    span.set_attribute("gen_ai.usage.output_tokens", output)
    model = getattr(response, "model", None)
    if model:
        span.set_attribute("gen_ai.response.model", str(model))


def _completion_of(response: Any) -> _Completion:
    """Text, tool calls and total tokens of a litellm ``ModelResponse``."""
    message = response.choices[0].message
    calls = [
        _ToolCall(c.id or f"call_{i}", c.function.name or "", c.function.arguments or "")
        for i, c in enumerate(message.tool_calls or [])
    ]
    usage = getattr(response, "usage", None)
    tokens = int(getattr(usage, "total_tokens", 0) or 0)
    return _Completion(message.content or "", calls, tokens)
