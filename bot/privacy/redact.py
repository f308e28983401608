"""PII detection (Microsoft Presidio's analyzer) and reversible redaction.

Detection runs Presidio's pattern recognizers: e-mail addresses (validated against the Public
Suffix List snapshot shipped with ``tldextract``, never fetched), phone numbers
(``phonenumbers``), card numbers (Luhn check), IBANs (ISO 13616 check digits), IPv4/IPv6
addresses, URLs, crypto wallets, MAC addresses, US SSNs and bank numbers, UK NINOs and
postcodes, and dates. Names (``PERSON``) and places (``LOCATION``) are found from context cues
(:mod:`bot.privacy.cues`: self-introductions, sign-offs, "Name:" fields, street addresses);
anywhere else they need a named-entity model: no spaCy model is published on PyPI by its
authors and Switchboard never downloads one, so the NER recognizer runs only when
``pii_spacy_model`` names a pipeline already installed (a package name or a folder). Without
it Presidio runs on a blank English tokenizer, which gives the context words ("phone",
"card"...) that raise pattern scores, and no entities.

:class:`Redactor` turns detections into reversible tokens kept in a per-turn
:class:`~bot.privacy.vault.Vault`::

    text, vault = redactor.redact("Mail me at ana@example.org")
    # text == "Mail me at <EMAIL_1>"; vault.restore(text) gives the original back.

Offsets are Python string indices: Unicode code points of the input text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError
from bot.privacy.cues import cue_recognizers
from bot.privacy.vault import Vault

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer
    from presidio_anonymizer import AnonymizerEngine

    from bot.config import Settings


IDENTITY_RECOGNIZERS: dict[str, str] = {
    "US_DRIVER_LICENSE": "UsLicenseRecognizer",
    "US_ITIN": "UsItinRecognizer",
    "US_PASSPORT": "UsPassportRecognizer",
    "MEDICAL_LICENSE": "MedicalLicenseRecognizer",
    "ABA_ROUTING_NUMBER": "AbaRoutingRecognizer",
    "UK_NHS": "NhsRecognizer",
    "UK_PASSPORT": "UkPassportRecognizer",
    "UK_DRIVING_LICENCE": "UkDrivingLicenceRecognizer",
    "CA_SIN": "CaSinRecognizer",
    "ES_NIF": "EsNifRecognizer",
    "ES_NIE": "EsNieRecognizer",
    "IT_FISCAL_CODE": "ItFiscalCodeRecognizer",
    "PL_PESEL": "PlPeselRecognizer",
    "FI_PERSONAL_IDENTITY_CODE": "FiPersonalIdentityCodeRecognizer",
    "SE_PERSONNUMMER": "SePersonnummerRecognizer",
    "DE_TAX_ID": "DeTaxIdRecognizer",
    "AU_TFN": "AuTfnRecognizer",
    "AU_MEDICARE": "AuMedicareRecognizer",
    "SG_NRIC_FIN": "SgFinRecognizer",
    "IN_AADHAAR": "InAadhaarRecognizer",
    "IN_PAN": "InPanRecognizer",
    "KR_RRN": "KrRrnRecognizer",
    "TR_NATIONAL_ID": "TrNationalIdRecognizer",
    "TH_TNIN": "ThTninRecognizer",
    "ZA_ID_NUMBER": "ZaIdNumberRecognizer",
    "NG_NIN": "NgNinRecognizer",
}
"""Personal identity numbers (driving licences, passports, tax and national ids) and the
Presidio recognizer class of each; most validate a check digit. Run on English-analyzed text
whatever the country (a message's language is not known)."""

ENTITY_TYPES: dict[str, str] = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "URL",
    "CRYPTO": "CRYPTO",
    "MAC_ADDRESS": "MAC_ADDRESS",
    "US_SSN": "US_SSN",
    "US_BANK_NUMBER": "US_BANK_NUMBER",
    "UK_NINO": "UK_NINO",
    "UK_POSTCODE": "UK_POSTCODE",
    "DATE_TIME": "DATE",
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
    **{entity: entity for entity in IDENTITY_RECOGNIZERS},
}
"""Every entity type Switchboard knows (Presidio's names) and the label of its tokens."""

NER_ENTITY_TYPES = frozenset({"PERSON", "LOCATION"})
"""Entity types a named-entity model finds anywhere; without one, only from context cues."""

_LANGUAGE = "en"
# Presidio logs the words around each match at DEBUG ("Context list is: ..."): message text.
_PRESIDIO_LOGGERS = ("presidio-analyzer", "presidio-anonymizer")


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """One detected value.

    Attributes:
        type: entity type, a key of :data:`ENTITY_TYPES`.
        start: offset of the first character (code points into the analyzed text).
        end: offset one past the last character.
        score: Presidio's confidence, 0 to 1.
    """

    type: str
    start: int
    end: int
    score: float


def check_entity_types(names: Iterable[str]) -> list[str]:
    """Validate entity type names.

    Args:
        names: names such as ``EMAIL_ADDRESS`` (case-insensitive).

    Returns:
        The names upper-cased, in order, without repeats.

    Raises:
        ConfigError: when a name is not in :data:`ENTITY_TYPES`.
    """
    out: list[str] = []
    for name in names:
        key = name.strip().upper()
        if key not in ENTITY_TYPES:
            known = ", ".join(ENTITY_TYPES)
            raise ConfigError(f"unknown PII entity type {name!r} (known: {known})")
        if key not in out:
            out.append(key)
    return out


def _resolve_overlaps(found: Sequence[PiiSpan]) -> list[PiiSpan]:
    """Non-overlapping spans covering every detected character.

    Overlapping detections form one span over their union, so no part of a value is left in
    clear because another recognizer claimed a piece of it. The span is typed by the longest
    of them (the most confident on a tie): a value that contains a shorter one is what was
    written (an IPv6 address whose digit groups pass an identity number's check digit).
    """
    ordered = sorted(found, key=lambda s: (s.start, -s.end))
    out: list[PiiSpan] = []
    group: list[PiiSpan] = []
    group_end = -1
    for span in [*ordered, None]:
        if span is not None and group and span.start < group_end:
            group.append(span)
            group_end = max(group_end, span.end)
            continue
        if group:
            best = max(group, key=lambda s: (s.end - s.start, s.score))
            out.append(PiiSpan(best.type, group[0].start, group_end, best.score))
        if span is not None:
            group, group_end = [span], span.end
    return out


class Redactor:
    """Detects PII and replaces it with reversible tokens.

    Building one loads Presidio (seconds); build it once per process and share it. Calls are
    synchronous and CPU-bound (milliseconds for a chat message: run them in a thread from
    async code); one redactor may serve several threads, a vault only one turn at a time.
    Building one sets Presidio's loggers to WARNING: at DEBUG they print message text.

    Args:
        entities: entity types redacted when a call names none; defaults to every type.
            Without a ``spacy_model``, types in :data:`NER_ENTITY_TYPES` are found from
            context cues only (listed in :attr:`cue_only`).
        score_threshold: minimum Presidio score (0 to 1) of a detection.
        phone_regions: ISO 3166 alpha-2 regions whose national phone formats are matched.
        spacy_model: an installed spaCy pipeline (package name or folder) providing NER.

    Raises:
        ConfigError: on an unknown entity type, or a ``spacy_model`` that is not installed
            (it is never downloaded).
    """

    def __init__(
        self,
        entities: Iterable[str] | None = None,
        *,
        score_threshold: float = 0.3,
        phone_regions: Sequence[str] = ("US", "GB", "DE", "IL", "IN", "CA", "BR"),
        spacy_model: str | None = None,
    ) -> None:
        requested = check_entity_types(entities if entities is not None else ENTITY_TYPES)
        self.score_threshold = score_threshold
        self.phone_regions = tuple(r.upper() for r in phone_regions)
        self.spacy_model = spacy_model
        self.supported = frozenset(ENTITY_TYPES)
        self.entities = tuple(requested)
        self.cue_only = () if spacy_model else tuple(e for e in requested if e in NER_ENTITY_TYPES)
        """Requested types found only from context cues (no NER model)."""
        self._analyzer = self._build_analyzer()

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """A redactor configured by ``pii_*`` settings (its default entities: ``pii_entities``).

        Raises:
            ConfigError: as the constructor; also when a ``pii_channel_entities`` list names
                an unknown type.
        """
        for names in settings.pii_channel_entities.values():
            check_entity_types(names)
        return cls(
            settings.pii_entities,
            score_threshold=settings.pii_score_threshold,
            phone_regions=settings.pii_phone_regions,
            spacy_model=settings.pii_spacy_model,
        )

    def __repr__(self) -> str:
        return f"Redactor(entities={list(self.entities)}, ner={self.spacy_model is not None})"

    def _build_analyzer(self) -> AnalyzerEngine:
        for name in _PRESIDIO_LOGGERS:  # no message text in logs, whatever the root level
            logging.getLogger(name).setLevel(logging.WARNING)
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

        registry = RecognizerRegistry(supported_languages=[_LANGUAGE])
        for recognizer in self._recognizers():
            registry.add_recognizer(recognizer)
        return AnalyzerEngine(
            registry=registry,
            nlp_engine=_local_nlp_engine(self.spacy_model),
            supported_languages=[_LANGUAGE],
            default_score_threshold=self.score_threshold,
        )

    def _recognizers(self) -> list[EntityRecognizer]:
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            CryptoRecognizer,
            DateRecognizer,
            IbanRecognizer,
            IpRecognizer,
            MacAddressRecognizer,
            PhoneRecognizer,
            SpacyRecognizer,
            UkNinoRecognizer,
            UkPostcodeRecognizer,
            UrlRecognizer,
            UsBankRecognizer,
            UsSsnRecognizer,
        )

        recognizers: list[EntityRecognizer] = [
            _offline_email_recognizer(),
            PhoneRecognizer(supported_regions=self.phone_regions),
            CreditCardRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
            UrlRecognizer(),
            CryptoRecognizer(),
            MacAddressRecognizer(),
            UsSsnRecognizer(),
            UsBankRecognizer(),
            UkNinoRecognizer(),
            UkPostcodeRecognizer(),
            DateRecognizer(),
            *cue_recognizers(),
        ]
        from presidio_analyzer import predefined_recognizers

        for class_name in IDENTITY_RECOGNIZERS.values():
            cls = getattr(predefined_recognizers, class_name)
            recognizers.append(cls(supported_language=_LANGUAGE))
        if self.spacy_model:
            recognizers.append(SpacyRecognizer(supported_entities=sorted(NER_ENTITY_TYPES)))
        return recognizers

    def analyze(self, text: str, entities: Iterable[str] | None = None) -> list[PiiSpan]:
        """Detect PII in ``text``.

        Args:
            text: any text (customer message, history, tool output).
            entities: types to look for; None uses :attr:`entities`. Types this redactor
                cannot detect are ignored.

        Returns:
            Non-overlapping spans sorted by ``start``; offsets in code points of ``text``.

        Raises:
            ConfigError: on an unknown entity type.
        """
        wanted = self._wanted(entities)
        if not wanted or not text:
            return []
        results = self._analyzer.analyze(text=text, language=_LANGUAGE, entities=wanted)
        found = [
            PiiSpan(r.entity_type, r.start, r.end, float(r.score))
            for r in results
            if r.entity_type in ENTITY_TYPES and r.end > r.start
        ]
        return _resolve_overlaps(found)

    def redact(
        self,
        text: str,
        *,
        entities: Iterable[str] | None = None,
        vault: Vault | None = None,
    ) -> tuple[str, Vault]:
        """Replace detected PII by tokens such as ``<EMAIL_1>``.

        Args:
            text: the text to redact.
            entities: types to redact; None uses :attr:`entities`.
            vault: the turn's vault, to share numbering across several texts of one turn
                (same value, same token); None starts a new one.

        Returns:
            ``(redacted text, vault)``; ``vault.restore(redacted)`` equals ``text``.

        Raises:
            ConfigError: on an unknown entity type.
        """
        text_out, vault, _spans = self.redact_spans(text, entities=entities, vault=vault)
        return text_out, vault

    def redact_spans(
        self,
        text: str,
        *,
        entities: Iterable[str] | None = None,
        vault: Vault | None = None,
    ) -> tuple[str, Vault, list[PiiSpan]]:
        """:meth:`redact` that also returns the spans it replaced (offsets into ``text``).

        Raises:
            ConfigError: on an unknown entity type.
        """
        vault = vault if vault is not None else Vault()
        vault.reserve(text)
        spans = self.analyze(text, entities)
        if not spans:
            return text, vault, spans
        from presidio_anonymizer import RecognizerResult
        from presidio_anonymizer.entities import OperatorConfig

        def tokenizer(label: str) -> OperatorConfig:
            return OperatorConfig(
                "custom", {"lambda": lambda value: vault.token_for(label, value)}
            )

        operators = {t: tokenizer(ENTITY_TYPES[t]) for t in {s.type for s in spans}}
        result = self._anonymizer.anonymize(
            text=text,
            analyzer_results=[RecognizerResult(s.type, s.start, s.end, s.score) for s in spans],
            operators=operators,
            merge_entities_with_spaces=False,
        )
        return result.text, vault, spans

    @staticmethod
    def tokenize(text: str, spans: Sequence[PiiSpan], vault: Vault) -> str:
        """Replace the given spans of ``text`` by the vault's tokens, first value first.

        For callers that analyze once and tokenize many times (the LLM agent caches the
        analysis of history messages across turns; each turn has its own vault).

        Args:
            text: the analyzed text.
            spans: non-overlapping spans sorted by ``start`` (as :meth:`analyze` returns).
            vault: the turn's vault; token-like strings already in ``text`` are reserved.

        Returns:
            The text with tokens; ``vault.restore`` of it equals ``text``.
        """
        vault.reserve(text)
        out: list[str] = []
        pos = 0
        for span in spans:
            out.append(text[pos : span.start])
            out.append(vault.token_for(ENTITY_TYPES[span.type], text[span.start : span.end]))
            pos = span.end
        out.append(text[pos:])
        return "".join(out)

    @cached_property
    def _anonymizer(self) -> AnonymizerEngine:
        from presidio_anonymizer import AnonymizerEngine

        engine: AnonymizerEngine = AnonymizerEngine()  # type: ignore[no-untyped-call]
        return engine

    def _wanted(self, entities: Iterable[str] | None) -> list[str]:
        if entities is None:
            return list(self.entities)
        return [e for e in check_entity_types(entities) if e in self.supported]


def _offline_email_recognizer() -> EntityRecognizer:
    """Presidio's e-mail recognizer, validating domains on the bundled suffix-list snapshot.

    Presidio's own validation calls ``tldextract.extract``, which fetches the Public Suffix
    List from the internet on first use; a hub must not phone out, so this one reads only the
    snapshot shipped inside the ``tldextract`` package.
    """
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return bool(extract(pattern_text).fqdn)

    recognizer: EntityRecognizer = OfflineEmailRecognizer()
    return recognizer


def _local_nlp_engine(spacy_model: str | None) -> Any:
    """A Presidio NLP engine that never downloads anything.

    With ``spacy_model`` None: spaCy's blank English pipeline (tokenizer and stop words only;
    lemmas fall back to the lower-cased token so Presidio's context words still match).

    Raises:
        ConfigError: when ``spacy_model`` is neither an installed package nor a folder.
    """
    import spacy
    from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine

    if spacy_model is None:
        nlp = spacy.blank(_LANGUAGE)
    elif spacy.util.is_package(spacy_model) or Path(spacy_model).is_dir():
        nlp = spacy.load(spacy_model)
    else:
        raise ConfigError(
            f"spaCy pipeline {spacy_model!r} is not installed "
            "(pii_spacy_model: Switchboard never downloads models)"
        )

    class LocalSpacyEngine(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {_LANGUAGE: nlp}  # type: ignore[assignment]  # Presidio types it None

        def _doc_to_nlp_artifact(self, doc: Any, language: str) -> NlpArtifacts:
            artifacts: NlpArtifacts = super()._doc_to_nlp_artifact(doc, language)
            artifacts.lemmas = [t.lemma_ or t.lower_ for t in doc]
            artifacts.keywords = NlpArtifacts.set_keywords(self, artifacts.lemmas, language)
            return artifacts

    engine = LocalSpacyEngine(models=[{"lang_code": _LANGUAGE, "model_name": str(spacy_model)}])
    engine.load()
    return engine
