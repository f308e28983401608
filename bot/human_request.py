"""Whether a customer's message asks to be handed to a person (:func:`wants_human`).

Pure text rules (English, German, French, Spanish, Portuguese, Italian, Dutch); the router and
the extractive agent escalate on them, the copilot leaves such messages out of its summary.
"""

from __future__ import annotations

import re
import unicodedata

_PERSON = (
    r"(?:a |an |the |some |one of (?:your|the) )?(?:real |live |actual |human |proper )?"
    r"(?:person|human(?: being)?|agent|someone|somebody|representative|rep|operator|"
    r"staff(?: member)?|employee|supervisor|manager|support (?:agent|person|team)|"
    r"(?:customer )?(?:service|support) (?:agent|rep|representative)|people)"
)
_STRICT_PERSON = (
    # after "I want/need ...": "someone" and a bare "agent" are too vague there ("I need
    # someone to explain webhooks", "I need an agent that answers in Slack").
    r"(?:a |an |the |some )?(?:(?:real|live|actual) (?:person|human|agent|people)|"
    r"human(?: agent| being)?|person|operator|representative|rep|supervisor|manager|"
    r"(?:customer )?(?:service|support) (?:agent|rep|representative))"
)
_EN_REQUEST = re.compile(
    # "talk to a human", "can I speak with someone", "let me chat with a live agent"
    r"\b(?:talk|speak|chat|get in touch)\s+(?:to|with)\s+" + _PERSON + r"\b"
    # "connect me to an agent", "transfer me to a person", "put me through to someone"
    r"|\b(?:connect|transfer|forward|put|pass|hand)\s+(?:me|us)\s+(?:through\s+)?(?:to|with)\s+"
    + _PERSON
    + r"\b"
    # "I want a human", "I need a real person", "give me an operator", "get me a representative"
    r"|\b(?:want|need|give me|get me|can i (?:get|have)|may i (?:get|have)|i'?d like)\s+"
    + _STRICT_PERSON
    + r"(?! (?:that|which|who|to (?:answer|reply|handle|respond)))\b"
)
_EN_STANDALONE = re.compile(
    # "real person", "live agent", "actual human", "a human being"
    r"\b(?:real|live|actual)\s+(?:person|human|agent|people)\b|\bhuman being\b"
)
_SHORT_ASK = re.compile(
    # a message that is only the request: "agent", "human please", "operator!!", "a person pls"
    r"^(?:an? |the )?(?:human|person|agent|operator|representative|rep|someone|"
    r"real person|live agent|human agent|support agent)(?: please| pls| now)?$"
)
_THIRD_PARTY = re.compile(
    # "how do customers talk to an agent", "let users speak to a human": a question about the
    # product, not a request.
    r"\b(?:customers?|users?|visitors?|clients?|they|them|callers?|people)\s+"
    r"(?:can |could |to |will |would )?(?:talk|speak|chat|get (?:connected|transferred))\b"
    # "how do I add a human agent", "create an operator account"
    r"|\b(?:add|create|invite|configure|set ?up|remove|delete|assign|register)\s+"
    r"(?:a |an |the |new |more )?(?:human |live |support )?(?:agent|operator|representative)s?\b"
)
_OTHER_LANGUAGES = re.compile(
    # German: "mit einem Menschen sprechen", "einen Mitarbeiter sprechen", "echter Mensch"
    r"\b(?:mit )?(?:einem|einer|einen|jemandem|echten?)\s+(?:echten\s+)?"
    r"(?:menschen|mitarbeiter(?:in)?|berater(?:in)?)\s+(?:sprechen|reden)\b"
    r"|\becht(?:en|er|e) mensch(?:en)?\b"
    # French: "parler à un humain", "un vrai humain", "une vraie personne"
    r"|\bparler (?:a|avec) (?:un |une |un vrai |une vraie )?"
    r"(?:humain|personne|agent|conseiller|conseillere|operateur|operatrice|quelqu'un)\b"
    r"|\b(?:vrai humain|vraie personne|personne reelle)\b"
    # Spanish: "hablar con una persona", "persona real"
    r"|\bhablar con (?:una |un |el |la )?(?:persona|humano|agente|operador|alguien|asesor)\b"
    r"|\b(?:persona real|ser humano)\b"
    # Portuguese: "falar com um atendente"
    r"|\bfalar com (?:um |uma |o |a )?(?:atendente|pessoa|humano|agente|alguem)\b"
    # Italian: "parlare con un operatore"
    r"|\bparlare con (?:un |una |un' )?(?:operatore|persona|umano|agente|qualcuno)\b"
    # Dutch: "met een medewerker spreken", "een echt mens"
    r"|\bmet een (?:medewerker|mens|persoon)\b|\been echt(?:e)? (?:mens|persoon)\b"
)


def _normalize(text: str) -> str:
    """Lower-case, strip accents and collapse white space and punctuation runs."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    folded = folded.replace("\u2019", "'")
    folded = re.sub(r"[^\w'?! ]+", " ", folded)
    return re.sub(r"\s+", " ", folded).strip()


def wants_human(text: str) -> bool:
    """True when a customer message asks to be handed to a person.

    Matches requests such as "talk to a person", "speak with someone", "I want a real human",
    "connect me to an agent", "representative please", "operator", and the same in German,
    French, Spanish, Portuguese, Italian and Dutch. Questions *about* human agents ("how do I
    add a human agent in the console?", "can customers talk to an agent?") are not requests.

    Args:
        text: the customer's plain text.

    Returns:
        Whether to escalate the session to the human queue.
    """
    norm = _normalize(text)
    if not norm:
        return False
    bare = norm.strip("?! ")
    if _SHORT_ASK.match(bare):
        return True
    if _OTHER_LANGUAGES.search(norm):
        return True
    if _THIRD_PARTY.search(norm):
        return False
    return bool(_EN_REQUEST.search(norm) or _EN_STANDALONE.search(norm))
