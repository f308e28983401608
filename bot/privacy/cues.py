"""Names and street addresses found from what surrounds them, without a named-entity model.

Support messages name people in a few set ways: a self-introduction ("my name is Ana Lopez",
"this is Ana Lopez from ..."), a sign-off ("Thanks," then "Ana" on the next line; "Kind
regards, Ana Lopez") and a form-like field ("Name: Ana Lopez"). Street addresses have a shape:
a house number, capitalized words and a street type ("12 Baker Street", "1600 Pennsylvania Ave
NW, Suite 4"), or a German style street word and number ("Hauptstraße 5"), or a post-office
box, or whatever follows "my address is" or an "Address:" field when it holds a number. These
recognizers are Presidio pattern recognizers (``regex`` module: the cue sits in a
look-behind, so only the name or the address is the span) for ``PERSON`` and ``LOCATION``. A
spaCy NER model (``pii_spacy_model``) finds names and places anywhere; these find them where
the wording says what they are, with or without a model.

Precision over recall: a name must be capitalized (``Ana``, ``O'Neil``, ``Jean-Luc``, ``McKay``,
an initial ``J.``), and the weak cues ("I'm", "this is") need a first and a last name, so
"I'm Unable to log in" or "this is Android 12" do not count. Customers who write their names
in lower case are missed.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from presidio_analyzer import EntityRecognizer

# One name word: capitalized, letters with inner apostrophes or hyphens (O'Neil, Jean-Luc,
# McKay, Ng), or an initial ("J."). \p{Lu}/\p{Ll}: any script's upper/lower case letters.
_WORD = (
    r"(?:\p{Lu}[\p{Ll}]+(?:['\u2019\-]\p{Lu}?[\p{Ll}]+)*|\p{Lu}[\p{Ll}]*\p{Lu}[\p{Ll}]+"
    r"|\p{Lu}['\u2019]\p{Lu}[\p{Ll}]+|\p{Lu}\.)"
)
# Words that are capitalized in support messages without being names (the start of the
# sentence after a cue: "this is Samsung Pay", "I am Not able").
_NOT_NAMES = (
    "Not|Unable|Having|Trying|Still|Also|Just|Really|So|Very|Writing|Contacting|Reaching|"
    "Looking|Getting|Using|Sorry|Here|There|The|A|An|My|Your|Our|This|That|It|In|On|At|From|"
    "With|About|Able|Going|Calling|Sure|Afraid|Glad|Happy|Interested|Wondering|Asking|Back|"
    "Again|Done|Good|Fine|Okay|Ok|Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|"
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    "Customer|Support|Team|Service|Account|Order|Ticket|Please|Thanks|Thank|Hello|Hi|Hey|"
    "Enter|Type|View|Name|Select|Tap|Set|Change|Edit|Choose|None|Unknown|Same"
)
_NAME_WORD = rf"(?!(?:{_NOT_NAMES})\b){_WORD}"
_FULL_NAME = rf"{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{1,3}}"
_ANY_NAME = rf"{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,3}}"

_STRONG_CUE = (
    r"(?i:\bmy\s+(?:full\s+|first\s+|last\s+|legal\s+)?name\s+is|\bmy\s+name's"
    r"|^[ \t]*(?:(?:full|first|last|customer|contact|your|account\s+holder)[ \t]+)?name[ \t]*:"
    r"|\bcall\s+me|\bsigned\s*:?|\baccount\s+holder\s+is|\bregistered\s+(?:to|under)"
    r"|\bin\s+the\s+name\s+of|\bunder\s+the\s+name)"
)
_WEAK_CUE = r"(?i:\bi\s+am|\bi['\u2019]m|\bthis\s+is|\bit['\u2019]s|\bhere\s+is|\bhere['\u2019]s)"
_SIGN_OFF = (
    r"(?i:(?:best|kind|warm|warmest)?\s*regards|thanks(?:\s+(?:again|a\s+lot|in\s+advance))?"
    r"|thank\s+you(?:\s+(?:again|in\s+advance))?|many\s+thanks|cheers|sincerely"
    r"|yours(?:\s+(?:truly|sincerely|faithfully))?|best(?:\s+wishes)?|respectfully|br)"
)

_DASHES = r"(?:[\-\u2013\u2014]+[ \t]*)?"  # "-- Ana", "— Ana"

# "my shipping address is ...", "Address: ..." (a form field): what follows, to the end of the
# sentence or line, when it holds a digit (a house number or a postcode).
_ADDRESS_CUE = (
    r"(?i:\bmy\s+(?:new\s+|current\s+|home\s+|shipping\s+|billing\s+|delivery\s+|postal\s+"
    r"|mailing\s+|street\s+)?address\s+is\s*:?|^[ \t]*(?:(?:shipping|billing|delivery|postal"
    r"|mailing|home|street)[ \t]+)?address[ \t]*:)"
)

# "I live in Valencia", "we're based in New South Wales": where the customer is. Only these
# personal phrasings ("located in Settings" is a manual's, not a customer's).
_HOME_CUE = (
    r"(?i:\b(?:i|we)\s+(?:live|reside)\s+in|\b(?:i|we)['\u2019](?:m|re)\s+based\s+in"
    r"|\b(?:i\s+am|we\s+are)\s+based\s+in|\bmy\s+home\s+town\s+is)"
)
_PLACE = rf"{_NAME_WORD}(?:[ \t]+(?:(?:de|del|la|le|am|upon|on|sur)[ \t]+)?{_NAME_WORD}){{0,4}}"

_STREET_TYPES = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|"
    "Terrace|Ter|Close|Crescent|Cres|Parkway|Pkwy|Highway|Hwy|Square|Sq|Circle|Cir|Trail|Trl|"
    "Row|Mews|Grove|Gardens|Walk|Hill|Park"
)
_STREET_WORD = r"(?:\p{Lu}[\p{Ll}]+\.?|\d{1,3}(?:st|nd|rd|th)|[NSEW]\.?)"
_UNIT = r"(?:,?[ \t]*(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|#)\.?[ \t]*#?[A-Za-z0-9\-]+)?"
_DIRECTION = r"(?:[ \t]+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"


def cue_recognizers() -> list[EntityRecognizer]:
    """Presidio recognizers of names (``PERSON``) and street addresses (``LOCATION``) by cue.

    Returns:
        Two ``PatternRecognizer`` objects (English). Scores: 0.85 a strong cue ("my name
        is", "Name:"), 0.7 a sign-off on its own line or at the end of one, 0.6 a weak cue
        with a full name ("this is Ana Lopez"), 0.7 a street address, 0.6 a PO box.
    """
    from presidio_analyzer import Pattern, PatternRecognizer

    # Presidio compiles with the ``regex`` module, whose flag values are those of ``re``.
    flags = re.MULTILINE  # case matters: names are told by their capitals
    person = PatternRecognizer(
        supported_entity="PERSON",
        name="PersonCueRecognizer",
        supported_language="en",
        global_regex_flags=flags,
        patterns=[
            Pattern("self-introduction", rf"(?<={_STRONG_CUE}[ \t]*){_ANY_NAME}", 0.85),
            Pattern(
                "introduction",
                rf"(?<={_WEAK_CUE}[ \t]+){_FULL_NAME}"
                r"(?=[ \t]*(?:[,.!;:)\n]|$|[ \t]+(?i:from|with|here|and)\b))",
                0.6,
            ),
            Pattern(
                "introduction, first name",
                rf"(?<={_WEAK_CUE}[ \t]+){_NAME_WORD}(?=[ \t]+(?i:here|speaking)\b)",
                0.6,
            ),
            Pattern(
                "sign-off line",
                rf"(?<=^[ \t]*{_DASHES}{_SIGN_OFF}[ \t]*[,.!]?[ \t]*\r?\n[ \t]*{_DASHES})"
                rf"{_ANY_NAME}(?=[ \t]*\r?$)",
                0.7,
            ),
            Pattern(
                "sign-off",
                rf"(?<={_SIGN_OFF}[ \t]*,[ \t]*){_ANY_NAME}(?=[ \t]*[.!]?[ \t]*\r?$)",
                0.7,
            ),
        ],
    )
    location = PatternRecognizer(
        supported_entity="LOCATION",
        name="StreetAddressRecognizer",
        supported_language="en",
        global_regex_flags=flags,
        patterns=[
            Pattern(
                "street address",
                rf"\b\d{{1,5}}[A-Za-z]?(?:[\-/]\d{{1,5}})?,?[ \t]+(?:{_STREET_WORD}[ \t]+){{1,4}}"
                rf"(?:{_STREET_TYPES})\b\.?{_DIRECTION}{_UNIT}",
                0.7,
            ),
            Pattern(
                "street and number",
                r"\b\p{Lu}[\p{Ll}\-]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer"
                r"|laan|straat|gatan|vägen|gade|vej|veien)[ \t]+\d{1,4}[a-z]?\b",
                0.7,
            ),
            Pattern("po box", r"\b(?i:p\.?\s?o\.?\s?box|post\s+office\s+box)[ \t]+\d{1,7}\b", 0.6),
            Pattern(
                "address after its cue",
                rf"(?<={_ADDRESS_CUE}[ \t]*)(?=[^\n.;!?]*\d)[^\s.,;:!?][^\n;!?]{{3,118}}?"
                r"(?=[ \t]*(?:\.[ \t]|\.?\r?$|[;!?\n]))",
                0.85,
            ),
            Pattern(
                "where the customer lives",
                rf"(?<={_HOME_CUE}[ \t]+){_PLACE}",
                0.7,
            ),
        ],
    )
    return [person, location]
