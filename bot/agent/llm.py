"""The LLM agent: a chat model through litellm, with a bounded tool-calling loop and streaming.

The prompt is built by :mod:`bot.agent.prompt`, citations are resolved by
:mod:`bot.agent.citations`, the tools come from :mod:`bot.agent.tools`.
"""

from __future__ import annotations

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
from bot.agent.prompt import compact, fixed_messages, history_messages, overflow_note
from bot.agent.tokens import TOKEN_SAFETY, count_tokens
from bot.agent.tools import tool_spec
from bot.agent.usage import UsageFn, report_usage
from bot.config import Settings
from bot.envelope import TALK_TO_HUMAN
from bot.errors import BackendUnavailable, ConfigError, Forbidden, LLMUnavailable, SwitchboardError
from bot.retrieval import Passage
from bot.tools import Tool, ToolContext
from bot.tracing import Span

log = logging.getLogger(__name__)

MAX_TOOL_RESULT_CHARS = 6000
"""A tool result handed back to the model is cut to this many characters."""

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
            ConfigError: when ``settings.llm_model`` is not set.
        """
        if not settings.llm_model:
            raise ConfigError("LLMAgent needs llm_model")
        self._settings = settings
        self._model = settings.llm_model
        self._tools = {t.name: t for t in tools}
        self._specs = [tool_spec(t) for t in tools]
        self._specs_tokens = count_tokens(json.dumps(self._specs)) if self._specs else 0
        self._router = self._make_router(settings)
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
        query = "\n".join(m.text for m in turn.messages if m.text.strip())
        passages: list[Passage] = []
        if query.strip():
            try:
                passages = await ctx.retriever.search(query[:2000], top_k=s.retrieve_top_k)
            except BackendUnavailable as exc:
                log.warning("agent.retrieve_failed", extra={**extra, "error": str(exc)})
        user_text = query or "(the customer sent no text)"
        if turn.overflow:
            user_text = overflow_note(turn.overflow) + "\n\nLatest message(s):\n" + user_text
        system, user = fixed_messages(s, self._budget, passages, sources, user_text)
        history = history_messages(turn, await turn.history(), s.agent_history_messages)
        convo: list[dict[str, Any]] = []  # this turn's assistant tool calls and tool results
        tokens = 0
        text = ""
        rounds = 0
        finished = False
        while rounds <= s.agent_max_tool_rounds:
            use_tools = bool(self._specs)
            final_round = rounds == s.agent_max_tool_rounds
            messages = compact(
                system, history, user, convo, budget=self._budget, session_key=turn.session_key
            )
            done = await self._complete(
                messages, tools=use_tools, forbid_tools=final_round, stream=turn.stream
            )
            tokens += done.tokens
            text = done.text
            if not done.tool_calls:
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
                content = await self._run_tool(call, ctx, sources, extra)
                convo.append({"role": "tool", "tool_call_id": call.id, "content": content})
        answer = strip_citation_markers(text)
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
        log.info(
            "agent.turn_done",
            extra={
                **extra,
                "rounds": rounds,
                "tokens": tokens,
                "escalate": escalate,
                "citations": [c.doc_id for c in citations],
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
    ) -> _Completion:
        """One chat completion (streamed when ``stream`` is set).

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
                    response = await self._stream(kwargs, stream)
                if span is not None:
                    _record_usage(span, response)
            await report_usage(self._on_usage, response, model=self._model, purpose="answer")
        except _LLM_ERRORS as exc:
            log.warning(
                "agent.llm_failed",
                extra={"model": self._model, "error": f"{type(exc).__name__}: {exc}"[:500]},
            )
            raise LLMUnavailable(f"every model failed: {type(exc).__name__}") from exc
        return _completion_of(response)

    async def _stream(self, kwargs: dict[str, Any], stream: StreamFn) -> Any:
        """Stream one completion, calling ``stream`` with the cleaned text so far.

        Returns:
            The completion rebuilt from the chunks (tool calls included).
        """
        chunks: list[Any] = []
        text = ""
        shown = ""
        response = await self._router.acompletion(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in response:
            chunks.append(chunk)
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                text += delta
                visible = strip_citation_markers(text, partial=True)
                if visible.strip() and visible != shown:
                    shown = visible
                    await stream(visible)
        built = litellm.stream_chunk_builder(chunks, messages=kwargs["messages"])
        if built is None:
            raise LLMUnavailable("the model's stream was empty")
        final = strip_citation_markers(text)
        if final and final != shown:
            await stream(final)
        return built

    async def _run_tool(
        self, call: _ToolCall, ctx: ToolContext, sources: Sources, extra: dict[str, Any]
    ) -> str:
        """Run one tool call; the tool message content (errors included, never raised)."""
        tool = self._tools.get(call.name)
        if tool is None:
            return _tool_error("unknown_tool", f"there is no tool {call.name!r}")
        try:
            args = tool.args_model.model_validate_json(call.arguments or "{}")
        except ValidationError as exc:
            details = exc.errors(include_url=False, include_context=False, include_input=False)
            return _tool_error("invalid_arguments", json.dumps(details, default=str))
        log_extra = {**extra, "tool": call.name}
        try:
            with tracing.span(Span.TOOL_CALL, attributes={"gen_ai.tool.name": call.name}):
                result = await tool(args, ctx)
        except Forbidden as exc:
            log.info("agent.tool_refused", extra={**log_extra, "error": str(exc)})
            return _tool_error("refused", f"not allowed: {exc}")
        except SwitchboardError as exc:
            log.warning("agent.tool_failed", extra={**log_extra, "error": str(exc)})
            return _tool_error("failed", str(exc))
        except Exception:  # a plugin's bug must not end the turn: the model is told
            log.exception("agent.tool_crashed", extra=log_extra)
            return _tool_error("failed", f"tool {call.name!r} failed unexpectedly")
        log.info("agent.tool_done", extra=log_extra)
        body = json.dumps(result.content, ensure_ascii=False, default=str)
        if len(body) > MAX_TOOL_RESULT_CHARS:
            body = body[:MAX_TOOL_RESULT_CHARS] + "…(truncated)"
        if not result.citations:
            return body
        ctx.citations.extend(result.citations)
        texts = _texts_by_doc(result.content)
        refs = []
        for c in result.citations:
            src = sources.add(c, texts.get(c.doc_id, body))
            refs.append(f"[{src.number}] {c.title} (doc_id {c.doc_id})")
        return body + "\n\nCite these documents as: " + "; ".join(refs)


def llm_router(settings: Settings) -> Router:
    """The litellm Router the agent uses (primary model, fallbacks, retries, timeouts).

    Other callers of the model (the console's copilot) go through it, so they share the
    agent's models, credentials and retry policy.
    """
    return LLMAgent._make_router(settings)


def _tool_error(kind: str, message: str) -> str:
    return json.dumps({"error": kind, "message": message})


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
