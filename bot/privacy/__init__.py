"""Privacy and trust: PII redaction, prompt-injection defences and a tamper-evident audit chain.

Modules (import the one you need; this package imports nothing heavy by itself):

* :mod:`bot.privacy.vault`: :class:`~bot.privacy.vault.Vault`, the per-turn map from
  reversible tokens (``<EMAIL_1>``) to the real values they replaced.
* :mod:`bot.privacy.redact`: :class:`~bot.privacy.redact.Redactor`, PII detection with
  Microsoft Presidio's analyzer (pattern recognizers; NER only with a locally installed spaCy
  model) and reversible tokenization.
* :mod:`bot.privacy.injection`: a lexical prompt-injection scorer and spotlighting helpers that
  mark untrusted text as data.
* :mod:`bot.privacy.leak`: :class:`~bot.privacy.leak.PromptEchoCheck`, the output check that
  recognizes an answer reproducing the system prompt.
* :mod:`bot.privacy.audit_chain`: SHA-256 hash chain over audit entries and its verifier.
* :mod:`bot.privacy.bench`: the figures printed by ``switchboard privacy bench``.
* :mod:`bot.privacy.cli`: the ``switchboard redact`` and ``switchboard privacy`` commands.
"""

from __future__ import annotations
