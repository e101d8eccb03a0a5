"""Is a free text free of personal data? Pure: the text, the closed-world name check and the
domain vocabulary are passed in; nothing is read or written here.

A text from a Fallkonferenz (a structural finding; also conference titles, proposal texts,
decision reasons, working-group names) goes to the Lenkungsgruppe, which may see no personal data
(DOMAIN.md sections 8 and 9). ``scan`` returns every place in the text that looks personal, each
as a ``Hit`` with a German message naming what to remove; an empty list means the text may leave.
The service refuses a text with hits; this module only reports them.

Normalisation. The patterns do not run on the text as typed but on normalised copies of it, so a
different way of writing the same thing is matched by the same rule. Every character of a copy
remembers which characters of the original it stands for; a hit found in a copy is reported with
``start``/``end``/``excerpt`` on the original characters, so removing what the hits name removes
the data however it was written. The copies:

- plain: Unicode NFKC (full-width letters, digits and signs such as "１４．０２", "＠"; ligatures;
  no-break and other compatibility spaces), digits of every script as ASCII digits ("۱۴" -> 14),
  format characters (soft hyphen, zero-width space, direction marks) dropped. E-mail addresses
  and names are matched here.
- collapsed: the plain copy with single digits standing apart joined ("0 1 7 1 ..." -> "0171...",
  "1 4. 0 2. 2 0 0 1" -> "14. 02. 2001"), spaces around a "." "/" "-" between digits removed
  ("14 . 02 . 2001", "1234567 - 439") and dashes between digits as "-". File numbers and
  addresses are matched here and on the plain copy.
- spoken: the collapsed copy made from the plain one after German number words became digits:
  "vierzehn", "einundzwanzig", "zweitausendeins", "neunzehnhundertneunzig", also written apart
  ("zwei tausend eins"), ordinals as "14." ("vierzehnter", "ersten"), digit words ("null eins
  sieben eins" -> "0171") and "plus" before a number as "+". The article "ein" is no number.
  Phone numbers and dates are matched here and on the plain copy.
Case is folded where it does not matter: e-mail words ("AT", "Punkt"), keywords ("Tel.",
"geboren"), IBANs, and names (looked up in normalised form). Every step is linear in the length
of the text, and the patterns are written so that no input makes them backtrack for long.

What is refused, and why:

- ``email``: an e-mail address, also with "@" written "(at)", "[at]", "{at}", " at ", " ät " and
  "." written "(punkt)", "[dot]", " dot ", " punkt ", in any case ("sara at example dot de"). With
  "at" as a bare word the top-level domain must be a common one ("de", "com", "org", ...), so a
  sentence with "at" and "Punkt" in it passes.
- ``phone``: a German or international number: ``+49 ...``, ``0049 ...``, ``49 ...`` without "+"
  (then 10 to 15 digits), a national number beginning with 0 (``0171/1234567``,
  ``0171.2345678``, ``0 2302 12345``, ``(02302) 12345``) of 9 to 14 digits, or any number of 5
  digits or more after "Tel."/"Telefon"/"Handy"/"Mobil"/"Fax". Years, counts, month/year
  (``05/2024``), dates and service numbers without a subscriber part (``0800``) pass. An office's
  number is refused too: the text cannot tell whose number it is.
- ``birth_date``: any date expression (day-precise, month and year, or a bare year) right after
  "geb.", "geboren (am/im/in)", "Geburtsdatum", "Geburtsjahr", "Geburtstag" or a genealogical
  "*", with at most a few words such as a place in between.
- ``date``: any other day-precise date with a year before ``BIRTH_DATE_YEAR_LIMIT`` (2010), in
  the forms ``3.4.1990``, ``03.04.90``, ``3. April 1990``, ``14.II.1990``, ``1990-04-03``,
  ``1990/04/03``, ``14/02/1990``, ``14-02-1990``, ``14 02 1990`` and ``14021990`` (eight digits
  standing alone), because it may be a birth date. Later day-precise dates ("seit dem
  01.03.2025"), dates without a year, month/year ("März 2024", "01/2025") and quarters
  ("Q1/2025") pass. Two-digit years 00-39 are read as 20xx, 40-99 as 19xx; slash, dash and space
  forms need a four-digit year ("3/12/15" is a ratio). The rule is deliberately blunt and easy to
  explain: a finding that needs an old day-precise date (a law's date, say) can give the year
  alone. Children born since 2010 are caught only through the birth context.
- ``file_number``: an identifier after "Az."/"Aktenzeichen"/"Kundennummer"/"BG-Nummer"/
  "Geschäftszeichen"/"Vorgangsnummer"/"IBAN"/... (with up to six further groups of digits or of
  one to three capitals: "362 02 BG 001 2345"); BAMF-style ``1234567-439``; any token or
  hyphen/slash chain that mixes letters and digits and holds a run of at least 5 digits
  (``36202BG0012345``); an IBAN of a country that issues them, however it is spaced; a
  Sozialversicherungsnummer (``65 170890 K 512``).
- ``address``: a street with a house number of 1-3 digits (``Lindenstraße 14``, ``Kölner Str. 45``,
  ``Am Ring 3a``, ``Jakob-Wessel-Straße 12``), also without the space after a street word
  (``Hauptstraße95``, ``Lindenstr.14``) and in lower case where the street word says it is one
  (``hauptstraße 95``, ``lindenallee 3``), and a postcode with a town (``58452 Wittmar``).
  Compounds such as "Kitaplatz 3" or "Bildungsweg 2" are not streets, and a number followed by a
  count noun ("Hauptstraße 12 Wohnungen") is not a house number.
- ``name``: (a) a capitalised word after "Herr"/"Herrn"/"Frau"/"Familie" (and "Hr."/"Fr."/"Fam.",
  academic titles skipped), whether or not the person is in the system, because such a phrase
  is personal in any case; roles ("Frau Bürgermeisterin"), domain nouns and vocabulary after the
  title are not names. (b) The closed-world check: every word that could be a name, in whatever
  case, is normalised with ``normalise_name_token`` and passed to ``is_known_name``, which answers
  whether it is a name token of a person in the system (the service backs it with the names of
  the persons on the conference's own agenda, indexed with ``name_tokens``). Joined words are
  asked by their parts too: CamelCase ("SaraYilmaz"), words joined by "_" or "." and handles
  ("#SaraYilmaz", "@sara.yilmaz"), a handle in one piece split into two names ("#sarayilmaz"),
  letters written apart ("S a r a"); the hit then covers the whole handle. Cyrillic and Greek
  look-alikes in a Latin word count as Latin. Not asked: particles ("al", "von", ...), words of
  the domain ``vocabulary`` (matched as whole phrases, so "Haus Kessler" shields "Kessler" only
  there), compounds naming an institution or street ("Marta-Kessler-Schule"), a built-in stop
  list of German words common in findings (``STOP_WORDS``) and, in lower case only, adjectives
  and other words that are frequent names ("klein", "frank", "rosa"). A registered name that is
  also such a word ("Sommer", "Lange", "Nur") is therefore found only in a name-like position:
  after a title ("Familie Sommer", "familie sommer"), between two names ("Ayşe Nur Yıldırım"),
  or right after a name written in the same case ("Jonas Sommer", "jonas sommer"). Genitives
  ("Leylas") are looked up with and without the final "s".

Not a defence against every way of hiding data on purpose: a name run into one word without a
mark ("sarayilmaz"), bare initials, an unregistered person's bare name, digits spelt with letters
("O171"), numbers spelt out in other languages or split by commas, or a lower-case title before
an unregistered name ("frau ahmadi") pass. It catches the personal data that slips into a text,
and the usual ways of writing it so that a pattern does not see it.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

KINDS = ("name", "birth_date", "date", "file_number", "address", "phone", "email")
BIRTH_DATE_YEAR_LIMIT = 2010
TWO_DIGIT_YEAR_PIVOT = 40


@dataclass(frozen=True, slots=True)
class Hit:
    """One place in the text that must go before the finding may leave the conference."""

    kind: str  # one of KINDS
    start: int
    end: int
    excerpt: str  # text[start:end]
    message: str  # German, for the moderator


# --- normalisation ---------------------------------------------------------------------------

# Letters that NFKD leaves whole, folded so that "Yıldırım" meets "Yildirim" and "Đorđević"
# meets "Dordevic" (not "Djordjevic": no transcription, as for the umlauts).
_FOLD = str.maketrans({
    "ı": "i", "ł": "l", "đ": "d", "ð": "d", "ø": "o", "æ": "ae", "œ": "oe", "þ": "th",
    "ħ": "h", "ŧ": "t", "ŀ": "l",
})

# Dropped from name tokens: they join a family name but say nothing about who it is, and several
# are German words too ("von", "der").
PARTICLES = frozenset({
    "al", "el", "ad", "ar", "as", "at", "az", "ul", "ibn", "bin", "bint", "ould",
    "von", "van", "de", "del", "della", "der", "den", "di", "da", "dos", "das", "du",
    "le", "la", "ter", "ten", "zu", "zur", "y",
})
# Particles that are no German words, so a name hit may grow over them ("El Amrani").
_FOREIGN_PARTICLES = frozenset({"al", "el", "ibn", "bin", "bint", "ould", "van", "de", "del",
                                "della", "di", "dos", "le", "la", "ter", "ten", "ul"})


# Cyrillic and Greek letters that look like Latin ones, folded only in a word that mixes them with
# Latin letters ("Sаra" with a Cyrillic а): a whole Cyrillic or Greek name keeps its letters.
_LOOKALIKES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d",
    "ӏ": "l", "һ": "h", "ԛ": "q", "ԝ": "w", "α": "a", "β": "b", "ε": "e", "ζ": "z", "η": "n",
    "ι": "i", "κ": "k", "μ": "m", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
})


def _script(ch: str) -> str:
    return unicodedata.name(ch, "").split(" ", 1)[0]


def normalise_name_token(token: str) -> str:
    """The form in which a name token is indexed and looked up.

    Compatibility forms are unfolded (NFKD), case is folded (ß -> ss), diacritics are removed
    rather than transcribed (ü -> u, not ue; so "Müller" meets "Muller" but not "Mueller"), a few
    letters NFKD keeps whole are folded (ı, ł, đ, ø, æ, ...), Cyrillic and Greek look-alikes in a
    word that also has Latin letters become Latin ("Sаra" with a Cyrillic а is "sara"), and
    everything that is not a letter (marks, apostrophes, hyphens, digits, spaces) is dropped. The
    result is in NFC.
    """
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", token).casefold())
    letters = "".join(ch for ch in text.translate(_FOLD) if unicodedata.category(ch)[0] == "L")
    if not letters.isascii():
        scripts = {_script(ch) for ch in letters}
        if "LATIN" in scripts and scripts & {"CYRILLIC", "GREEK"}:
            letters = letters.translate(_LOOKALIKES)
    return unicodedata.normalize("NFC", letters)


_TOKEN_SPLIT = re.compile(r"[\s\-\u2010\u2011\u2012\u2013\u2014_/,;:()]+")


def name_tokens(name: str) -> list[str]:
    """The tokens under which a person's name field is indexed for ``is_known_name``.

    Split at spaces and hyphens, normalised with ``normalise_name_token``, without particles and
    one-letter tokens, without repeats. "Leyla al-Hassan" -> ["leyla", "hassan"]. The service
    must index with exactly this function: ``scan`` looks up words the same way.
    """
    tokens: list[str] = []
    for chunk in _TOKEN_SPLIT.split(name):
        token = normalise_name_token(chunk)
        if len(token) > 1 and token not in PARTICLES and token not in tokens:
            tokens.append(token)
    return tokens


# --- the stop list ---------------------------------------------------------------------------
# Capitalised words that findings are made of. Not asked of is_known_name: each would otherwise
# be one more chance of a registered name that is also a German word refusing a clean finding.
# Kept in readable German; normalised on import. Inflected forms are covered by _is_stop.

# Written lower case but capitalised at the start of a sentence.
_FUNCTION_WORDS = """
der die das den dem des ein eine einer einem einen eines kein keine keiner keinem keinen ich du
er sie es wir ihr man sich dies diese dieser dieses diesem diesen jede jeder jedes alle allen
viele vielen wenige wenigen einige manche mehrere beide andere anderen weitere neue neuen alte
lange langen kurze hohe hoher große kleine erste zweite dritte letzte im in am an auf aus bei
beim mit nach von vom vor zu zum zur für über unter zwischen seit bis durch gegen ohne um trotz
wegen während laut gemäß ab ins als und oder aber doch denn sondern weil da wenn ob dass obwohl
damit sobald solange nachdem bevor wer was wie wo wann warum welche welcher welches nur auch
noch schon nicht kaum fast oft immer nie häufig selten meist meistens zudem außerdem daher
deshalb dadurch dabei dann danach trotzdem jedoch allerdings insgesamt bisher derzeit aktuell
zurzeit inzwischen mittlerweile teilweise hier dort ja nein etwa rund circa ca mehr weniger
besonders insbesondere zunächst zuletzt künftig jetzt heute bereits ebenfalls sowohl weder
entweder gleichzeitig stattdessen vielfach grundsätzlich faktisch praktisch offenbar gerade gut
positiv negativ unklar fehlende fehlt fehlen gibt sind ist wird werden wurde wurden hat haben
kann können muss müssen soll sollen
"""
# Weekdays, months, seasons: a given name that is also a month ("Mai", "August") is found only
# after a title.
_TIME_WORDS = """
montag dienstag mittwoch donnerstag freitag samstag sonntag mo di mi do fr sa so januar jänner
februar märz april mai juni juli august september oktober november dezember feb mär mrz apr aug
sep sept okt nov dez frühjahr frühling sommer herbst winter ferien sommerferien herbstferien
osterferien jahr monat woche tag stunde minute quartal halbjahr schuljahr stichtag zeitraum uhr
kw vormittag nachmittag mittag abend morgen wochenende
"""
# Offices, law, procedures, barriers, people in general: the matter of findings.
_DOMAIN_NOUNS = """
sozialamt jobcenter kreisjobcenter ausländerbehörde abh agentur arbeitsagentur jugendamt
kreisjugendamt schulamt schulaufsicht gesundheitsamt bürgerbüro bürgeramt rathaus stadt kreis
gemeinde land bund kommune verwaltung behörde amt stelle träger kursträger sprachkursträger vhs
volkshochschule caritas diakonie awo drk integration point ki integrationszentrum mbe jmd mso
bamf außenstelle familienkasse krankenkasse krankenversicherung ehrenamt ehrenamtliche pate
lotse beratung beratungsstelle migrationsberatung migrationsdienst sprechstunde integrationskurs
sprachkurs berufssprachkurs kurs kursplatz kita kitaplatz kindertagesstätte kindergarten krippe
schule schulplatz berufsschule berufskolleg gymnasium realschule gesamtschule grundschule
ausbildung ausbildungsplatz praktikum arbeit arbeitsplatz job wohnung unterkunft
sammelunterkunft notunterkunft wohnraum miete mietobergrenze familie frau herr mann kind
jugendliche jugendlicher erwachsene eltern mutter vater sohn tochter geschwister person mensch
einwohner fall akte wartezeit termin antrag bescheid nachweis unterlagen dokument formular
vordruck frist post datenschutz einwilligung schweigepflichtentbindung informationsfluss
schnittstelle rechtskreis rechtskreiswechsel übergang übergabe zuständigkeit zusammenarbeit
kooperation residenzpflicht wohnsitzauflage duldung aufenthalt aufenthaltstitel
aufenthaltserlaubnis fiktionsbescheinigung asyl asylverfahren anerkennung sprache deutsch
deutschkenntnisse arabisch farsi dari tigrinya kurdisch kurmanci englisch französisch russisch
türkisch somali paschtu ukrainisch dolmetscher sprachmittler sprachmittlung übersetzung
kinderbetreuung betreuung gesundheit krankenschein arzt impfung angebot bedarf lücke problem
barriere hürde lösung vorschlag ziel lenkungsgruppe arbeitsgruppe fallkonferenz klimakonferenz
fallmanagement sonne wolke gewitter wind leistung grundsicherung bürgergeld kindergeld bildung
teilhabe mobilität ticket bus bahn fahrtkosten stadtgrenze grenze ort standort region quartier
internet telefon mail website portal online hotline gesetz paragraph absatz sgb aufenthg asylblg
asylg bafög kdu but uma ogs azr eu i ii iii iv v vi vii viii ix x xi xii zahl anteil quote
prozent euro seiteneinsteiger geflüchtete zugewanderte neuzugewanderte migranten migrantinnen
ratsuchende teilnehmende alleinerziehende minderjährige kunde kundinnen syrien irak iran eritrea
somalia afghanistan türkei ukraine kosovo serbien albanien nordmazedonien deutschland nrw europa
bezug recht verfahren gespräch gruppe dienst kasse hilfe karte klasse platz zeit center
schulpflicht zuweisung umzug fehlanzeige weg stand richtlinie verordnung thema
"""
# After "Frau"/"Herr" these name a role, not a person.
_ROLE_WORDS = """
bürgermeister landrat minister dezernent leiter leitung kollege kollegin sachbearbeiter
sachbearbeitende sachbearbeitung fallmanager mitarbeiter mitarbeitende fachkraft lehrkraft
lehrer sozialarbeiter betreuer vorsitzende vorsitzender beauftragte beauftragter amtsleiter
anwalt rechtsanwalt doktor dr prof professor
"""
# Heads of compounds that are common nouns, e.g. "Deutschkurse" or "Kitaplätze" after a title.
_NOUN_HEADS = """
kurs platz stelle zeit amt behörde center schule kita angebot antrag bescheid leistung beratung
betreuung termin unterkunft wohnung verfahren nachweis unterlagen gespräch konferenz gruppe
dienst kasse träger sprache pflicht auflage titel karte ticket geld hilfe bedarf frist vertrag
ausweis schein prüfung klasse problem mittlung förderung sicherung erlaubnis
"""

_MAX_NAME_LENGTH = 40
_SUFFIXES = ("innen", "nen", "ern", "en", "er", "es", "in", "e", "n", "s")


def _word_set(block: str) -> frozenset[str]:
    return frozenset(normalise_name_token(word) for word in block.split())


_FUNCTION = _word_set(_FUNCTION_WORDS)
_TIME = _word_set(_TIME_WORDS)
_DOMAIN = _word_set(_DOMAIN_NOUNS)
_ROLES = _word_set(_ROLE_WORDS)
_HEADS = _word_set(_NOUN_HEADS)
STOP_WORDS = _FUNCTION | _TIME | _DOMAIN | _ROLES
# Given names that are also month abbreviations: stop words only when written "Jan." etc.
_NAMELIKE_MONTH_ABBREVIATIONS = frozenset({"jan", "jun", "jul"})


def _inflected(token: str, words: frozenset[str]) -> bool:
    """Is the token a word of the set, possibly with a plural or case ending?"""
    if token in words:
        return True
    return any(
        token.endswith(suffix) and token[: -len(suffix)] in words
        for suffix in _SUFFIXES
        if len(token) - len(suffix) >= 3
    )


_NOUNS = _TIME | _DOMAIN | _ROLES


def _is_stop(token: str) -> bool:
    # Function words are listed with their forms; stripping endings off them would shield names
    # ("Jan" is not "ja" + n).
    return token in _FUNCTION or _inflected(token, _NOUNS)


# Domain nouns that are also frequent family names: after a title they are the name ("Frau Mann").
_SURNAME_NOUNS = _word_set("mann kind post wind land bund sonne arzt ort bahn kunde")


def _is_common_noun(token: str) -> bool:
    """A domain noun or role, or a compound whose head is one (for the word after a title)."""
    if token in _SURNAME_NOUNS:
        return False
    if _inflected(token, _DOMAIN) or _inflected(token, _ROLES):
        return True
    if len(token) > _MAX_NAME_LENGTH:
        return True  # no name, and the search below is quadratic
    return any(_inflected(token[cut:], _HEADS) for cut in range(3, len(token) - 2))


# --- words -----------------------------------------------------------------------------------

# Letters and the combining marks of the scripts names in this domain come in; a mark outside
# these ranges splits a word, which costs recall only.
_L = r"(?:[^\W\d_]|[\u0300-\u036f\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed" \
     r"\u0900-\u0903\u093a-\u094f\u1dc0-\u1dff\u200c\u200d\u20d0-\u20ff\ufe20-\ufe2f])"
_APOSTROPHES = "'\u2019\u02bc"
_HYPHENS = "\\-\u2010\u2011"
_PART = rf"{_L}+(?:[{_APOSTROPHES}]{_L}+)*"
_WORD_RE = re.compile(rf"{_PART}(?:[{_HYPHENS}]{_PART})*")
_PART_RE = re.compile(_PART)


@dataclass(frozen=True, slots=True)
class _Part:
    start: int
    end: int
    raw: str
    norm: str


@dataclass(frozen=True, slots=True)
class _Word:
    start: int
    end: int
    parts: tuple[_Part, ...]


def _words(text: str) -> list[_Word]:
    words = []
    for match in _WORD_RE.finditer(text):
        parts = tuple(
            _Part(match.start() + p.start(), match.start() + p.end(), p.group(),
                  normalise_name_token(p.group()))
            for p in _PART_RE.finditer(match.group())
        )
        words.append(_Word(match.start(), match.end(), parts))
    return words


def _capitalised(raw: str) -> bool:
    """Upper-case first letter, or a script without case (Arabic, Ethiopic, ...)."""
    first = raw[0]
    return first.isupper() or (not first.islower() and first.isalpha())


@lru_cache(maxsize=16)
def _compile_vocabulary(vocabulary: frozenset[str]) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Each vocabulary entry as its sequence of normalised parts, indexed by the first part."""
    by_first: dict[str, list[tuple[str, ...]]] = {}
    for entry in vocabulary:
        sequence = tuple(normalise_name_token(p) for p in _PART_RE.findall(entry))
        sequence = tuple(t for t in sequence if t)
        if sequence:
            by_first.setdefault(sequence[0], []).append(sequence)
    return {first: tuple(seqs) for first, seqs in by_first.items()}


def _shielded(words: list[_Word], vocabulary: frozenset[str]) -> set[tuple[int, int]]:
    """(word, part) positions covered by a vocabulary phrase."""
    if not vocabulary:
        return set()
    index = _compile_vocabulary(vocabulary)
    flat = [(w, p, part.norm) for w, word in enumerate(words) for p, part in enumerate(word.parts)]
    norms = [norm for _, _, norm in flat]
    covered: set[tuple[int, int]] = set()
    for i, norm in enumerate(norms):
        for sequence in index.get(norm, ()):
            if tuple(norms[i:i + len(sequence)]) == sequence:
                covered.update((w, p) for w, p, _ in flat[i:i + len(sequence)])
    return covered


# --- raw hits --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Raw:
    start: int
    end: int
    kind: str
    what: str | None = None  # how the message names it, when not the kind's default


# --- normalised views ------------------------------------------------------------------------
# The patterns run on normalised copies of the text. Each character of a copy remembers the span
# of the original it stands for, so a hit found in a copy is reported on the original characters.

@dataclass(frozen=True, slots=True)
class _View:
    text: str
    starts: list[int]  # per character of text: where its source begins in the original
    ends: list[int]  # ... and where it ends

    def original(self, raw: _Raw) -> _Raw | None:
        if raw.end <= raw.start:
            return None
        return _Raw(self.starts[raw.start], self.ends[raw.end - 1], raw.kind, raw.what)


class _Builder:
    """A new view made of pieces of an old one; each piece names the old span it replaces."""

    def __init__(self, source: _View):
        self.source = source
        self.pieces: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []

    def keep(self, start: int, end: int) -> None:
        if end > start:
            self.pieces.append(self.source.text[start:end])
            self.starts.extend(self.source.starts[start:end])
            self.ends.extend(self.source.ends[start:end])

    def put(self, out: str, start: int, end: int) -> None:
        if out:
            self.pieces.append(out)
            self.starts.extend([self.source.starts[start]] * len(out))
            self.ends.extend([self.source.ends[end - 1]] * len(out))

    def build(self) -> _View:
        return _View("".join(self.pieces), self.starts, self.ends)


def _identity(text: str) -> _View:
    return _View(text, list(range(len(text))), list(range(1, len(text) + 1)))


# Format characters (soft hyphen, zero-width space, direction marks) hide nothing and are dropped;
# the two joiners belong to Persian and Indic spelling and stay.
_KEEP_FORMAT = frozenset("\u200c\u200d")


def _plain_view(text: str) -> _View:
    """NFKC (full-width letters and digits, ligatures, compatibility spaces), digits of every
    script as ASCII digits, format characters dropped. Combining marks go with their base letter,
    so composition never splits a mapped character."""
    if text.isascii():
        return _identity(text)
    source = _identity(text)
    builder = _Builder(source)
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        while j < n and unicodedata.category(text[j])[0] == "M":
            j += 1
        if unicodedata.category(text[i]) == "Cf" and text[i] not in _KEEP_FORMAT:
            i += 1  # its marks, if any, start the next cluster
            continue
        cluster = unicodedata.normalize("NFKC", text[i:j])
        if not cluster.isascii():
            cluster = "".join(str(unicodedata.digit(ch)) if unicodedata.category(ch) == "Nd" else ch
                              for ch in cluster)
        builder.put(cluster, i, j)
        i = j
    return builder.build()


def _rewrite(view: _View, regex: re.Pattern[str], replace: Callable[[re.Match[str]], str]) -> _View:
    """A view with every match of regex replaced (each replacement maps to what it replaced)."""
    matches = list(regex.finditer(view.text))
    if not matches:
        return view
    builder = _Builder(view)
    pos = 0
    for match in matches:
        builder.keep(pos, match.start())
        out = replace(match)
        if out == match.group():
            builder.keep(match.start(), match.end())
        else:
            builder.put(out, match.start(), match.end())
        pos = match.end()
    builder.keep(pos, len(view.text))
    return builder.build()


# Single digits standing apart ("0 1 7 1", "1 4. 0 2. 2 0 0 1") are one number.
_LONE_DIGITS_RE = re.compile(r"(?<![\w,])\d(?:[ ]{1,2}\d)+(?!\w)")
# Spaces around a separator between digits go, dashes become "-": "14 . 02 . 2001",
# "1234567 – 439".
_SPACED_SEPARATOR_RE = re.compile(r"(?<=\d)[ ]{0,2}[./\-\u2010-\u2015][ ]{0,2}(?=\d)")


def _collapse(view: _View) -> _View:
    view = _rewrite(view, _LONE_DIGITS_RE, lambda m: m.group().replace(" ", ""))
    return _rewrite(view, _SPACED_SEPARATOR_RE,
                    lambda m: re.sub(r"[\u2010-\u2015]", "-", m.group().strip(" ")))


# German number words, as they are written in one word: "vierzehn", "einundzwanzig",
# "zweitausendeins", "neunzehnhundertneunzig", ordinals "vierzehnter", "ersten", "zwanzigste".
_NUMBER_TOKENS: dict[str, int] = {word: value for words, value in (
    ("null", 0), ("ein eins", 1), ("zwei zwo", 2), ("drei", 3), ("vier", 4),
    ("fünf fuenf funf", 5), ("sechs", 6), ("sieben", 7), ("acht", 8), ("neun", 9), ("zehn", 10),
    ("elf", 11), ("zwölf zwoelf zwolf", 12), ("dreizehn", 13), ("vierzehn", 14),
    ("fünfzehn fuenfzehn funfzehn", 15), ("sechzehn", 16), ("siebzehn", 17), ("achtzehn", 18),
    ("neunzehn", 19), ("zwanzig", 20), ("dreissig", 30), ("vierzig", 40),
    ("fünfzig fuenfzig funfzig", 50), ("sechzig", 60), ("siebzig", 70), ("achtzig", 80),
    ("neunzig", 90), ("hundert", 100), ("tausend", 1000), ("und", -1),
) for word in words.split()}
_NUMBER_TOKEN_RE = re.compile("|".join(sorted(_NUMBER_TOKENS, key=len, reverse=True)))
# Ordinals whose stem differs from the cardinal: erste, dritte, siebte, achte.
_ORDINAL_STEMS = (("ers", "eins"), ("drit", "drei"), ("sieb", "sieben"), ("ach", "acht"))
_ORDINAL_SUFFIXES = ("sten", "ster", "stem", "stes", "ste", "ten", "ter", "tem", "tes", "te")


def _cardinal(word: str) -> tuple[int, int] | None:
    """(value, value of the last token) of a German cardinal written as one word, else None."""
    tokens: list[tuple[str, int]] = []
    pos = 0
    while pos < len(word):
        match = _NUMBER_TOKEN_RE.match(word, pos)
        if match is None:
            return None
        tokens.append((match.group(), _NUMBER_TOKENS[match.group()]))
        pos = match.end()
    if tokens == [("null", 0)]:
        return 0, 0
    i = 0

    def at(k: int) -> tuple[str, int]:
        return tokens[k] if k < len(tokens) else ("", -2)

    def below_100() -> int | None:
        nonlocal i
        word_, value = at(i)
        if 1 <= value <= 9 and at(i + 1)[0] == "und" and at(i + 2)[1] in range(20, 100, 10) \
                and word_ != "eins":
            i += 3
            return value + at(i - 1)[1]
        if 1 <= value <= 90 and word_ not in ("ein", "eins"):
            i += 1
            return value
        if word_ == "ein" and at(i + 1)[0] in ("hundert", "tausend"):
            i += 1
            return 1
        if word_ == "eins" and i == len(tokens) - 1 and i > 0:
            i += 1
            return 1
        return None

    def below_1000() -> int | None:
        nonlocal i
        first = below_100()
        if at(i)[0] != "hundert":
            return first
        i += 1
        if at(i)[0] == "und":
            i += 1
        rest = below_100()
        return (first or 1) * 100 + (rest or 0)

    if tokens[-1][0] == "eins" and len(tokens) == 1:
        return 1, 1
    value = below_1000()
    if at(i)[0] == "tausend" and (value is None or value < 1000):
        i += 1
        if at(i)[0] == "und":
            i += 1
        rest = below_1000()
        value = (value or 1) * 1000 + (rest or 0)
    if value is None or i != len(tokens) or tokens[-1][0] == "und":
        return None
    return value, tokens[-1][1]


@lru_cache(maxsize=4096)
def _number_word(word: str) -> str | None:
    """The digits a German number word stands for ("14." for an ordinal), else None. The article
    "ein" alone is no number."""
    word = word.casefold()
    if not 3 <= len(word) <= 60 or word == "ein":
        return None
    cardinal = _cardinal(word)
    if cardinal is not None:
        return str(cardinal[0])
    for suffix in _ORDINAL_SUFFIXES:
        if not word.endswith(suffix) or len(word) == len(suffix):
            continue
        base = word[:-len(suffix)]
        for stem, full in _ORDINAL_STEMS:
            if not suffix.startswith("s") and base.endswith(stem):
                base = base[:-len(stem)] + full
                break
        cardinal = _cardinal(base)
        if cardinal is None or cardinal[0] == 0:
            continue
        # "-ste" after tens, hundreds, thousands; "-te" after 1-19.
        if (cardinal[1] >= 20) == suffix.startswith("s"):
            return f"{cardinal[0]}."
    return None


_LETTER_RUN_RE = re.compile(r"[^\W\d_]+")
# Words that join number words written apart into one number.
_JOINING_NUMBERS = ("hundert", "tausend", "und")


def _number_words(view: _View) -> _View:
    """Number words as digits, also written apart ("zwei tausend eins", "neunzehn hundert
    neunzig"); "plus" before a number as "+"."""
    text = view.text
    words = list(_LETTER_RUN_RE.finditer(text))
    out: list[tuple[int, int, str]] = []
    i = 0
    while i < len(words):
        joined = None
        for j in range(min(len(words) - 1, i + 5), i, -1):
            parts = [word.group().casefold() for word in words[i:j + 1]]
            if any(part.startswith(_JOINING_NUMBERS) or part.endswith(_JOINING_NUMBERS)
                   for part in parts) \
                    and all(text[words[k].end():words[k + 1].start()] == " " for k in range(i, j)) \
                    and (digits := _number_word("".join(parts))) is not None:
                joined = (words[i].start(), words[j].end(), digits)
                i = j + 1
                break
        if joined is not None:
            out.append(joined)
            continue
        word = words[i]
        digits = _number_word(word.group())
        if digits is None and word.group().casefold() == "plus":
            following = re.match(r"[ ]*([^\W_]+)", text[word.end():word.end() + 40])
            if following and (following.group(1)[0].isdigit()
                              or _number_word(following.group(1)) is not None):
                digits = "+"
        if digits is not None:
            out.append((word.start(), word.end(), digits))
        i += 1
    if not out:
        return view
    builder = _Builder(view)
    pos = 0
    for start, end, digits in out:
        builder.keep(pos, start)
        builder.put(digits, start, end)
        pos = end
    builder.keep(pos, len(text))
    return builder.build()


# "@" also as "(at)", "[at]", "{at}", " at ", " ät "; "." also as "(punkt)", "[dot]", " dot ",
# " punkt ". Matched case-insensitively on the NFKC copy, where "＠" and "．" are "@" and ".".
_AT = r"(?:[ ]?[(\[{<][ ]?(?:at|ät|@)[ ]?[)\]}>][ ]?|[ ]+(?P<word_at>at|ät)[ ]+|@|[ ]@[ ])"
_DOT = r"(?:[ ]?[(\[{<][ ]?(?:dot|punkt|\.)[ ]?[)\]}>][ ]?|[ ]+(?:dot|punkt)[ ]+|\.)"
_EMAIL_RE = re.compile(
    rf"(?<![\w.+\-])(?P<local>[\w+\-]+(?:{_DOT}[\w+\-]+){{0,8}}){_AT}"
    rf"(?P<domain>[\w\-]+(?:{_DOT}[\w\-]+){{1,8}})",
    re.IGNORECASE,
)
_DOT_SPLIT_RE = re.compile(_DOT, re.IGNORECASE)
# With "at" written as a word, only a well-known top-level domain makes it an address.
_COMMON_TLDS = frozenset("""
de com org net eu info at ch nl be fr it es pl tr uk co io me biz edu gov email online web mail
ru ua sy ir af iq er so lb jo eg ma tn dz gr ro bg rs ba hr al mk xk cz sk hu dk se no fi pt
""".split())


def _emails(text: str) -> Iterator[_Raw]:
    for match in _EMAIL_RE.finditer(text):
        domain = match.group("domain")
        trimmed = domain.rstrip(".-")
        tld = _DOT_SPLIT_RE.split(trimmed)[-1]
        if len(tld) < 2 or not tld.isalpha() or match.group("local").strip(".") == "":
            continue
        if match.group("word_at") and tld.casefold() not in _COMMON_TLDS:
            continue
        yield _Raw(match.start(), match.end() - (len(domain) - len(trimmed)), "email")


# Separators inside a phone number: one space, or a slash/dash/dot with optional spaces.
# Mandatory between digit groups, so a long digit run has one parse only (no backtracking
# blow-up).
_PSEP = r"(?:[ \t\u00a0]?[/\-\u2013.][ \t\u00a0]?|[ \t\u00a0])"
_CONTEXT_PSEP = r"(?:[ \t\u00a0]?[/\-\u2013][ \t\u00a0]?|[ \t\u00a0])"
_PHONE_RE = re.compile(
    rf"(?<![\w.,+/\-])"
    rf"(?:(?P<intl>(?:\+|00)[ \u00a0]?[1-9]\d{{0,2}}(?:{_PSEP}?\(0\))?)"
    # 49 without "+" or "00": Germany's code, when a national number without its 0 follows.
    rf"|(?P<bare>49(?:{_PSEP}?\(0\))?(?={_PSEP}?[1-9]))"
    rf"|(?P<paren>\(0\d{{2,5}}\))|(?P<zero>0[ \u00a0]?(?=[1-9])))"
    # A group opening with 00 and more digits starts another (international) number.
    rf"(?:{_PSEP}?\d+(?:{_PSEP}(?!00\d)\d+){{0,5}})(?!\d|[.,]\d)"
)
_PHONE_CONTEXT_RE = re.compile(
    r"\b(?:Tel\.?|Telefon(?:nummer)?|Telefonnr\.?|Handy(?:nummer)?|Mobil(?:nummer)?|Mobilnr\.?"
    r"|Fax|Rufnummer|WhatsApp)\s*:?\s*(\+?\d+(?:" + _CONTEXT_PSEP + r"\d+){0,5})(?!\d|[.,]\d)",
    re.IGNORECASE,
)
_MONTH_YEAR_RE = re.compile(r"(?<!\d)(?:0?[1-9]|1[0-2])/(?:19|20)\d\d(?!\d)")
# A day and a month between dots, or a whole date at the start: a date, not a phone number.
_DOTTED_DAY_RE = re.compile(r"(?<!\d)(\d{1,2})\.(\d{1,2})\.")
_LEADING_DATE_RE = re.compile(r"(\d{1,2})([ ./\-])(\d{1,2})\2(?:19|20)\d\d(?!\d)")


def _dated(candidate: str) -> bool:
    days = [(m.group(1), m.group(2)) for m in _DOTTED_DAY_RE.finditer(candidate)]
    leading = _LEADING_DATE_RE.match(candidate)
    if leading:
        days.append((leading.group(1), leading.group(3)))
    return any(1 <= int(day) <= 31 and 1 <= int(month) <= 12 for day, month in days)


def _plausible_phone(candidate: str, kind: str) -> bool:
    if _MONTH_YEAR_RE.search(candidate) or _dated(candidate):
        return False  # "05/2024 - 09/2025" has the shape of a number but is two months
    digits = sum(ch.isdigit() for ch in candidate.replace("(0)", ""))
    if kind == "intl":
        significant = re.sub(r"^\D*(?:00)?", "", candidate).replace("(0)", "")
        return 8 <= sum(ch.isdigit() for ch in significant) <= 15
    if kind == "bare":
        return 10 <= digits <= 15  # 49 and a national number of 8 to 13 digits
    return 9 <= sum(ch.isdigit() for ch in candidate) <= 14


def _phones(text: str) -> Iterator[_Raw]:
    pos = 0
    while (match := _PHONE_RE.search(text, pos)) is not None:
        # The pattern runs on over any digit group that follows ("0171 2345678 2019"); the
        # longest plausible prefix that ends with a whole group is the number. Without one, the
        # number may begin at a later group ("0800 0171 2345678").
        groups = [(match.start() + m.start(), match.start() + m.end())
                  for m in re.finditer(r"\d+", match.group())]
        kind = next(k for k in ("intl", "bare", "paren", "zero") if match.group(k) is not None)
        for _, end in reversed(groups):
            if _plausible_phone(text[match.start():end], kind):
                yield _Raw(match.start(), end, "phone")
                pos = end
                break
        else:
            pos = groups[1][0] if len(groups) > 1 else match.end()
    for match in _PHONE_CONTEXT_RE.finditer(text):
        if sum(ch.isdigit() for ch in match.group(1)) >= 5:
            yield _Raw(match.start(1), match.end(1), "phone")


_MONTHS = {
    "januar": 1, "jänner": 1, "jan": 1, "februar": 2, "feb": 2, "märz": 3, "maerz": 3, "mär": 3,
    "mrz": 3, "april": 4, "apr": 4, "mai": 5, "juni": 6, "jun": 6, "juli": 7, "jul": 7,
    "august": 8, "aug": 8, "september": 9, "sept": 9, "sep": 9, "oktober": 10, "okt": 10,
    "november": 11, "nov": 11, "dezember": 12, "dez": 12,
}
_MONTH_ALT = "|".join(sorted(_MONTHS, key=len, reverse=True))
_NUMERIC_DATE_RE = re.compile(
    r"(?<![\d.])(?P<d>\d{1,2})\.[ \u00a0]?(?P<m>\d{1,2})\.(?:[ \u00a0]?(?P<y>\d{4}|\d{2}))?"
    r"(?!\d|\.\d)"
)
_TEXT_DATE_RE = re.compile(
    rf"(?<![\d.])(?P<d>\d{{1,2}})\.?[ \u00a0]*(?P<mon>{_MONTH_ALT})\b\.?"
    r"(?:[ \u00a0]*(?P<y>\d{4}))?(?!\d)",
    re.IGNORECASE,
)
_ISO_DATE_RE = re.compile(r"(?<![\d\-/.])(?P<y>\d{4})(?:-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?![\d\-])"
                          r"|/(?P<m2>\d{1,2})/(?P<d2>\d{1,2})(?![\d/])"
                          r"|\.(?P<m3>\d{2})\.(?P<d3>\d{2})(?!\d|\.\d))")
# 14/02/2001, 14-02-2001, 14 02 2001: with a four-digit year only ("3/12/15" is a ratio).
_SEPARATED_DATE_RE = re.compile(
    r"(?<![\d./\-])(?<!\d )(?P<d>\d{1,2})(?:(?P<sep>[/\-])(?P<m>\d{1,2})(?P=sep)(?P<y>\d{4})"
    r"|[ ](?P<m2>\d{1,2})[ ](?P<y2>(?:19|20)\d\d))(?!\d|[./\-]\d)"
)
# 14.II.2001: a Roman month between dots.
_ROMAN_MONTHS = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6, "VII": 7, "VIII": 8, "IX": 9,
                 "X": 10, "XI": 11, "XII": 12}
_ROMAN_DATE_RE = re.compile(
    r"(?<![\d.])(?P<d>\d{1,2})\.[ ]?(?P<mon>XII|XI|X|IX|VIII|VII|VI|V|IV|III|II|I)\."
    r"(?:[ ]?(?P<y>\d{4}))?"
    r"(?!\w|\.\d)"
)
# 14021990: eight digits standing alone that read as day, month and a year 1900-2009 (what a
# date with its digits spaced out, "1 4 0 2 1 9 9 0", collapses to).
_COMPACT_DATE_RE = re.compile(
    r"(?<![\w./\-])(?P<d>[0-3]\d)(?P<m>[01]\d)(?P<y>19\d\d|200\d)(?![\w]|[./\-]\d)")
# Date expressions that are only personal after a birth keyword: month/year and a bare year.
_COARSE_DATE_RE = re.compile(
    rf"(?<!\w)(?:(?:{_MONTH_ALT})\.?[ \u00a0]*|(?:0?[1-9]|1[0-2])/)?(?:19|20)\d\d(?!\d)",
    re.IGNORECASE
)
# A birth keyword, then at most three connecting words ("am", "in Kabul am", "ca."), then the
# date; the genealogical star only where it cannot be a gender star ("Lehrer*innen").
_BIRTH_CONTEXT_RE = re.compile(
    r"(?:\bgeb\.|\bgeboren\b|\bgeburts(?:datum|jahr|tag)\b|\bgeb\.-?datum\b|(?:^|(?<=[\s(]))\*)"
    r"[ \u00a0]*:?(?:[ \u00a0]*(?:am|im|in|den|ca\.|etwa|vermutlich|angeblich|laut\s+\w+"
    r"|(?-i:[A-ZÄÖÜ]\w*)),?){0,3}[ \u00a0]*$",
    re.IGNORECASE,
)
_BIRTH_WINDOW = 60


def _full_year(year: str) -> int:
    value = int(year)
    if len(year) == 4:
        return value
    return 2000 + value if value < TWO_DIGIT_YEAR_PIVOT else 1900 + value


def _birth_context(text: str, start: int) -> bool:
    return _BIRTH_CONTEXT_RE.search(text[max(0, start - _BIRTH_WINDOW):start]) is not None


def _precise_dates(text: str) -> Iterator[tuple[int, int, int | None]]:
    """(start, end, year or None) of every day-precise date."""
    for match in _NUMERIC_DATE_RE.finditer(text):
        yield from _valid(match, int(match.group("m")))
    for match in _TEXT_DATE_RE.finditer(text):
        yield from _valid(match, _MONTHS[match.group("mon").casefold()])
    for match in _ISO_DATE_RE.finditer(text):
        day = match.group("d") or match.group("d2") or match.group("d3")
        month = match.group("m") or match.group("m2") or match.group("m3")
        yield from _valid(match, int(month), day, match.group("y"))
    for match in _ROMAN_DATE_RE.finditer(text):
        yield from _valid(match, _ROMAN_MONTHS[match.group("mon")])
    for match in _COMPACT_DATE_RE.finditer(text):
        yield from _valid(match, int(match.group("m")))
    for match in _SEPARATED_DATE_RE.finditer(text):
        yield from _valid(match, int(match.group("m") or match.group("m2")), match.group("d"),
                          match.group("y") or match.group("y2"))


def _valid(match: re.Match[str], month: int, day: str | None = None,
           year: str | None = None) -> Iterator[tuple[int, int, int | None]]:
    # Range checks only: a mistyped 31.02.1990 is as personal as a real date.
    day = day or match.group("d")
    year = year if year is not None else match.group("y")
    if 1 <= int(day) <= 31 and 1 <= month <= 12:
        yield match.start(), match.end(), _full_year(year) if year else None


def _dates(text: str) -> Iterator[_Raw]:
    precise = list(_precise_dates(text))
    for start, end, year in precise:
        if _birth_context(text, start):
            yield _Raw(start, end, "birth_date")
        elif year is not None and year < BIRTH_DATE_YEAR_LIMIT:
            yield _Raw(start, end, "date")
    inside = {position for start, end, _ in precise for position in range(start, end)}
    for match in _COARSE_DATE_RE.finditer(text):
        if match.start() not in inside and _birth_context(text, match.start()):
            yield _Raw(match.start(), match.end(), "birth_date")


_FILE_KEYWORDS = (
    (r"Az\.?|AZ|Aktenzeichen|Akten-?[Nn]r\.?|Gz\.?|GZ|Geschäftszeichen", "das Aktenzeichen"),
    (r"Kundennummer|Kunden-?[Nn]r\.?|Kd\.?-?[Nn]r\.?", "die Kundennummer"),
    (r"BG-?Nummer|BG-?[Nn]r\.?|Bedarfsgemeinschaftsnummer", "die BG-Nummer"),
    (r"Vorgangsnummer|Vorgangs-?[Nn]r\.?|Fallnummer|Fall-?[Nn]r\.?", "die Vorgangsnummer"),
    (r"AZR-?Nummer|AZR-?[Nn]r\.?|Personenkennziffer|PKZ", "die AZR-Nummer"),
    (r"Sozialversicherungsnummer|SV-?Nummer|SV-?[Nn]r\.?|Rentenversicherungsnummer|"
     r"Versichertennummer|Steuer-?ID|Steueridentifikationsnummer",
     "die Versicherungs- oder Steuernummer"),
    (r"Ausweisnummer|Ausweis-?[Nn]r\.?|Passnummer|Pass-?[Nn]r\.?|Dokumentennummer",
     "die Ausweisnummer"),
    (r"IBAN", "die Kontoverbindung (IBAN)"),
)
# An identifier: a digit-bearing token, optionally with ./- joints, and up to six further
# space-separated groups of digits or of one to three capitals ("65 170890 K 512",
# "362 02 BG 001 2345"); capitals at its end are no part of it.
_IDENT = (r"(?=[A-Za-z0-9./\-]*\d)[A-Za-z0-9]+(?:[./\-][A-Za-z0-9]+)*"
          r"(?:[ \u00a0](?:\d+|[A-Z]{1,3})(?![\w])){0,6}")
_FILE_KEYWORD_RES = tuple(
    (re.compile(rf"(?<![\w-])(?:{keywords})(?![\w])[ \u00a0]*[:.]?[ \u00a0]*(?:Nr\.[ \u00a0]*)?"
                rf"({_IDENT})"), what)
    for keywords, what in _FILE_KEYWORDS
)
_BAMF_RE = re.compile(r"(?<![\w\-/])\d{6,8}-\d{3}(?![\w\-/])")
_ALNUM_CHAIN_RE = re.compile(r"(?<![\w\-/])[A-Za-z0-9]+(?:[\-/][A-Za-z0-9]+)*(?![\w])")
# An IBAN, however its characters are spaced: country, check digits, 11 to 30 more. The
# country must be one that issues IBANs ("MB 010 ..." is a file size and a number).
_IBAN_COUNTRIES = ("AD|AE|AL|AT|AZ|BA|BE|BG|BH|BI|BR|BY|CH|CR|CY|CZ|DE|DJ|DK|DO|EE|EG|ES|FI|FK|FO"
                   "|FR|GB|GE|GI|GL|GR|GT|HR|HU|IE|IL|IQ|IS|IT|JO|KW|KZ|LB|LC|LI|LT|LU|LV|LY|MC|MD"
                   "|ME|MK|MN|MR|MT|MU|NI|NL|NO|OM|PK|PL|PS|PT|QA|RO|RS|RU|SA|SC|SD|SE|SI|SK|SM|SO"
                   "|ST|SV|TL|TN|TR|UA|VA|VG|XK|YE")
# The country in capitals, or in lower case right before the check digits ("de12 ..."); not
# capitalised, which is a word at the start of a sentence ("Es 01 ...").
_IBAN_RE = re.compile(
    rf"(?<![\w])(?:(?:{_IBAN_COUNTRIES})[ ]?|(?:{_IBAN_COUNTRIES.lower()}))\d{{2}}"
    r"(?:[ ]?[A-Za-z0-9]){11,30}(?![\w])")
_SV_NUMBER_RE = re.compile(r"(?<![\w])\d{2}[ \u00a0]?\d{6}[ \u00a0]?[A-Z][ \u00a0]?\d{3}(?![\w])")


def _file_numbers(text: str) -> Iterator[_Raw]:
    for regex, what in _FILE_KEYWORD_RES:
        for match in regex.finditer(text):
            ident = re.sub(r"(?:[ \u00a0][A-Z]{2,3})+$", "", match.group(1)).rstrip(".-/ ")
            if sum(ch.isdigit() for ch in ident) >= 3:
                yield _Raw(match.start(1), match.start(1) + len(ident), "file_number", what)
    for match in _BAMF_RE.finditer(text):
        yield _Raw(match.start(), match.end(), "file_number", "das Aktenzeichen")
    for match in _ALNUM_CHAIN_RE.finditer(text):
        chain = match.group()
        if re.search(r"[A-Za-z]", chain) and re.search(r"\d{5}", chain):
            yield _Raw(match.start(), match.end(), "file_number")
    for match in _IBAN_RE.finditer(text):
        iban = re.sub(r"(?:[ ][A-Za-z]+)+$", "", match.group())  # "... 0130 00 an": a word
        compact = iban.replace(" ", "")
        if 15 <= len(compact) <= 34 and sum(ch.isdigit() for ch in compact) >= 10:
            yield _Raw(match.start(), match.start() + len(iban), "file_number",
                       "die Kontoverbindung (IBAN)")
    for match in _SV_NUMBER_RE.finditer(text):
        yield _Raw(match.start(), match.end(), "file_number", "die Sozialversicherungsnummer")


_SUFFIXES_OF_STREETS = ("straße", "strasse", "str", "weg", "gasse", "platz", "allee", "ring",
                        "damm", "ufer", "pfad", "steig", "stieg", "chaussee", "wall", "kamp",
                        "promenade")
_STREET_SUFFIX = "(?:" + "|".join(_SUFFIXES_OF_STREETS).replace("str|", r"str\.?|") + ")"
_STREET_WORD = (r"(?:Straße|Strasse|Str\.|Weg|Gasse|Platz|Allee|Ring|Damm|Ufer|Chaussee|Wall|Markt"
                r"|Promenade)")
_SP = r"[ \u00a0]"
# 1-3 digits, not starting with 0, an optional letter, an optional range: 3a, 12-14, 7/9. The
# space before it may be missing ("Hauptstraße95", "Lindenstr.14", "Am Ring3a").
_HOUSE_NUMBER = (
    rf"(?:{_SP}*(?:Nr\.{_SP}*)?([1-9]\d{{0,2}}(?:{_SP}?[a-zA-Z](?!\w))?"
    rf"(?:{_SP}?[/\-]{_SP}?\d{{1,3}}[a-zA-Z]?)?))(?!\w|[.,]\d|{_SP}?%)"
)
_STREET_RES = (
    # Lindenstraße 14, Jakob-Wessel-Straße 12, Hauptstr. 5; lower case with an unmistakable
    # suffix: hauptstraße 14, lindenallee 3
    re.compile(rf"(?<![\w\-])(?P<street>(?:[A-ZÄÖÜ]\w*-)*"
               rf"(?:[A-ZÄÖÜ]\w*?{_STREET_SUFFIX}|(?<=-){_STREET_WORD}"
               rf"|[a-zäöü]\w*?(?:straße|strasse|str\.|gasse|allee))){_HOUSE_NUMBER}"),
    # Kölner Straße 45, Hagener Str. 3 (not "Der Platz 1": the adjective comes from a place name)
    re.compile(rf"(?<![\w\-])(?P<street>(?P<adjective>[A-ZÄÖÜ]\w{{3,}}er){_SP}+{_STREET_WORD})"
               rf"{_HOUSE_NUMBER}"),
    # Am Ring 3a, An der Kirche 5, Im Siepen 2
    re.compile(
        rf"(?<![\w\-])(?P<street>(?:Am|Im|An{_SP}+der|An{_SP}+den|Auf{_SP}+dem|Auf{_SP}+der"
        rf"|In{_SP}+der|In{_SP}+den|Zum|Zur|Unter{_SP}+den|Hinter{_SP}+dem|Vor{_SP}+dem"
        rf"|Alte|Alter|Neue|Neuer){_SP}+(?P<noun>[A-ZÄÖÜ][\w\-]*)){_HOUSE_NUMBER}"
    ),
)
_NOT_PLACE_ADJECTIVES = _word_set("erster zweiter dritter vierter fünfter letzter nächster anderer "
                                  "jeder weiter unser")
# What follows "Am"/"Im"/... in a street name: a place, not a time or an office ("Am Montag 3").
_STREET_NOUNS = _word_set("""
ring markt bahnhof hang berg bach park wall graben anger hof kamp busch wald feld bruch deich
kirche kirchplatz winkel heck weiher teich brink knapp loh siepen acker garten tor turm wiese heide
damm ufer steinbruch mühlenbach rain stein kreuz eichholz sportplatz schlosspark hagen höhe halde
linden eichen
""")
_STREET_NOUN_ENDINGS = tuple(_word_set("""
berg bach feld hof wiese heide busch wald kamp garten hang brink winkel graben markt park teich
bruch siepen acker anger höhe kuhle tal grund
"""))
# First parts that make "-platz", "-weg", ... a common noun rather than a street.
_NOT_STREET_PREFIXES = _word_set("""
kita kurs sprachkurs integrationskurs ausbildung arbeit studien studium therapie praktikum
betreuung krippe kindergarten sitz stell unterbringung heim ogs ganztag termin bildung dienst
recht leben lösung zugang beratung frauenhaus um
""")
_LOWER_COUNT_WORDS = _word_set("neue weitere freie offene zusätzliche mehr weniger pro je mal "
                               "von bis oder und plätze prozent x")
_POSTCODE_RE = re.compile(
    r"(?<![\w.,/\-])(?:D-[ \u00a0]?)?(?P<plz>\d{5})[ \u00a0]+(?P<town>[A-ZÄÖÜ][\w\-]+)"
)
# Endings of German nouns (mostly plurals) that no town name has: "12000 Bedarfsgemeinschaften".
_NOUN_ENDINGS = tuple(_word_set("""
ung ungen schaft schaften heit heiten keit keiten ion ionen innen ende enden ierte ierten nisse
ismus ierende tat taten plätze kurse anträge
"""))
# Words before a number that make it a quantity: "mit rund 15000 Einwohnern".
_QUANTIFIERS = _word_set("rund etwa ca circa über unter mehr als knapp fast nur insgesamt von bis "
                         "mit je pro weitere zusätzlich zusätzliche allein bereits sogar")


def _next_word(text: str, pos: int) -> str | None:
    match = re.match(r"[ \u00a0]*(\S+)", text[pos:pos + 60])
    if match is None:
        return None
    word = re.match(r"[^\W\d_]+", match.group(1))
    return word.group() if word else match.group(1)


def _counted_after(text: str, pos: int, vocabulary: frozenset[str]) -> bool:
    """Does a count noun or unit follow, so the number before it is a count, not a house number?"""
    word = _next_word(text, pos)
    if word is None:
        return False
    if word[0] in "%€" or word in ("m²", "m2", "qm", "km"):
        return True
    norm = normalise_name_token(word)
    if not norm or (norm,) in _compile_vocabulary(vocabulary).get(norm, ()):
        return False
    return _inflected(norm, _LOWER_COUNT_WORDS) or norm.endswith(_NOUN_ENDINGS) or (
        _is_stop(norm) and norm not in _FUNCTION)


def _addresses(text: str, vocabulary: frozenset[str]) -> Iterator[_Raw]:
    for number, regex in enumerate(_STREET_RES):
        for match in regex.finditer(text):
            street = match.group("street")
            if number == 0 and not re.search(rf"-{_STREET_WORD}$", street):
                core = normalise_name_token(street.rsplit("-", 1)[-1])
                suffix = next((normalise_name_token(x) for x in _SUFFIXES_OF_STREETS
                               if core.endswith(normalise_name_token(x))), "")
                prefix = core[:len(core) - len(suffix)]
                if len(prefix) < 2 or _inflected(prefix, _NOT_STREET_PREFIXES):
                    continue
            adjective = match.groupdict().get("adjective")
            if adjective and normalise_name_token(adjective) in _NOT_PLACE_ADJECTIVES:
                continue
            if number == 2:
                noun = normalise_name_token(match.group("noun"))
                if noun not in _STREET_NOUNS and not noun.endswith(_STREET_NOUN_ENDINGS):
                    continue
            if _counted_after(text, match.end(), vocabulary):
                continue
            yield _Raw(match.start(), match.end(), "address")
    for match in _POSTCODE_RE.finditer(text):
        town = normalise_name_token(match.group("town"))
        window = text[max(0, match.start() - 30):match.start()]
        before = re.search(r"(\w+)[^\w]*$", window)
        preceding = before.group(1) if before else ""
        # After another number without a comma: the tail of a phone number ("(0100) 10000") or
        # a list of counts.
        if match.group("plz").startswith("00") or re.search(r"\d\)?[ \u00a0/\-]*$", window) \
                or normalise_name_token(preceding) in _QUANTIFIERS \
                or _is_stop(town) or _is_common_noun(town) or town.endswith(_NOUN_ENDINGS):
            continue
        yield _Raw(match.start(), match.end(), "address")


# --- names -----------------------------------------------------------------------------------

_TITLES = frozenset({"Herr", "Herrn", "Frau", "Familie"})
_DOTTED_TITLES = frozenset({"Hr", "Fr", "Fam"})
_ACADEMIC = frozenset({"dr", "prof", "med", "dipl", "ing"})
_MAX_NAME_WORDS = 3


def _gap(text: str, words: list[_Word], i: int) -> str:
    return text[words[i].end:words[i + 1].start]


def _is_title(text: str, words: list[_Word], i: int) -> bool:
    raw = text[words[i].start:words[i].end]
    if raw in _TITLES:
        return re.fullmatch(r"[ \u00a0]{1,3}", _gap(text, words, i)) is not None
    if raw in _DOTTED_TITLES:
        return re.fullmatch(r"\.[ \u00a0]{0,3}", _gap(text, words, i)) is not None
    return False


def _word_shielded(w: int, word: _Word, shielded: set[tuple[int, int]]) -> bool:
    return all((w, p) in shielded for p in range(len(word.parts)))


def _spaced(text: str, left: _Word, right: _Word) -> bool:
    return re.fullmatch(r"[ \u00a0]{1,3}", text[left.end:right.start]) is not None


def _titled_names(text: str, words: list[_Word], shielded: set[tuple[int, int]]) -> Iterator[_Raw]:
    for i in range(len(words) - 1):
        if not _is_title(text, words, i):
            continue
        # "Fr." is also Friday: "Fr. Vormittag".
        friday = text[words[i].start:words[i].end] == "Fr"
        start = end = None
        core = 0
        j = i + 1
        while j < len(words) and core < _MAX_NAME_WORDS:
            word = words[j]
            previous = words[j - 1]
            # The words of a name stand next to each other; only a title's dot comes between.
            dotted = j == i + 1 or (
                previous.parts[-1].norm in _ACADEMIC and text[previous.end:previous.end + 1] == ".")
            if j > i + 1 and re.fullmatch(r"\.?[ \u00a0]{1,3}" if dotted else r"[ \u00a0]{1,3}",
                                          text[previous.end:word.start]) is None:
                break
            single = word.parts[0].norm if len(word.parts) == 1 else None
            if core == 0 and start is None and single in _ACADEMIC \
                    and text[word.end:word.end + 1] == ".":
                j += 1  # "Frau Dr. med. Adebayo"
                continue
            if single in PARTICLES:
                # "Herr von Brenkhausen", "Frau Leyla El Amrani"; but after a name only a
                # particle that is no German word: "Herr Adebayo vom Gesundheitsamt".
                if core and single not in _FOREIGN_PARTICLES:
                    break
                start = word.start if start is None else start
                j += 1
                continue
            # "al-Hassan": the particle may be lower case, the name itself may not.
            named = [part for part in word.parts if part.norm not in PARTICLES]
            if not named or not _capitalised(named[0].raw):
                break
            last = word.parts[-1].norm
            if core == 0 and start is None and _inflected(last, _ROLES):
                j += 1  # "Frau Bürgermeisterin Klein": the role is no name, what follows may be
                continue
            if _word_shielded(j, word, shielded) or (
                    _is_common_noun(last) if core == 0 else _is_stop(last)):
                break
            if friday and core == 0 and (
                    _inflected(last, _TIME) or last.endswith(("tag", "abend"))):
                break
            start = word.start if start is None else start
            end = word.end
            core += 1
            j += 1
        if core:
            yield _Raw(start, end, "name")


def _names_no_person(word: _Word) -> bool:
    """"Marta-Kessler-Schule", "Jakob-Wessel-Straße": a compound naming an institution or a
    street after a person is no reference to a person."""
    last = word.parts[-1].norm
    return len(word.parts) > 1 and (
        _inflected(last, _DOMAIN) or last.endswith(("strasse", "str", "weg", "gasse", "allee")))


# Lower-case words that are also frequent names: in normal writing they begin a name only at the
# start of a sentence, so lower case they are asked only in a name-like position.
_LOWER_STOP = _word_set("""
klein gross lang kurz jung alt neu frei froh fröhlich schön hoch braun schwarz weiss grün rot
stark kühn fromm hell hart kalt warm wild lieb link recht bald gern gerne früh spät ganz frank
ehrlich lustig munter ernst heil weise schnell still stolz treu dick zart mild rosa will kraus
krause sommer winter herbst frühling mai april august
""")
_TITLE_WORDS = frozenset({"frau", "herr", "herrn", "familie", "fam", "hr", "fr"})
# The whole of a user name, hashtag or joined name: "#SaraYilmaz", "@sara.yilmaz", "sara_yilmaz".
_HANDLE_RE = re.compile(r"[#@]?[\w'\-]+(?:\.[\w'\-]+)*")
# Letters written apart: "S a r a Y i l m a z".
_SPACED_LETTERS_RE = re.compile(r"(?<![^\W\d_])[^\W\d_](?:[ ][^\W\d_]){2,}(?![^\W\d_])")


def _camel_pieces(raw: str) -> list[str]:
    """"SaraYilmaz" -> ["sara", "yilmaz"]; a word without an inner capital -> []."""
    if raw.isupper() or not any(ch.isupper() for ch in raw[1:]):
        return []
    pieces = []
    start = 0
    for i in range(1, len(raw)):
        if raw[i].isupper() and raw[i - 1].islower():
            pieces.append(raw[start:i])
            start = i
    pieces.append(raw[start:])
    return [normalise_name_token(piece) for piece in pieces] if len(pieces) > 1 else []


def _known_names(text: str, words: list[_Word], shielded: set[tuple[int, int]],
                 is_known_name: Callable[[str], bool]) -> Iterator[_Raw]:
    answers: dict[str, bool] = {}

    def registered(token: str) -> bool:
        # Genitive without apostrophe: "Leylas Kurs".
        for variant in (token, token[:-1] if token.endswith("s") and len(token) > 3 else None):
            if variant is not None:
                if variant not in answers:
                    answers[variant] = bool(is_known_name(variant))
                if answers[variant]:
                    return True
        return False

    def askable(w: int, p: int, part: _Part) -> bool:
        return 2 <= len(part.norm) <= _MAX_NAME_LENGTH and part.norm not in PARTICLES \
            and (w, p) not in shielded

    def month(part: _Part) -> bool:
        return part.norm in _NAMELIKE_MONTH_ABBREVIATIONS and text[part.end:part.end + 1] == "."

    def ordinary(part: _Part) -> bool:
        """A word of the language, asked only in a name-like position."""
        return _is_stop(part.norm) or month(part) or (
            not _capitalised(part.raw) and _inflected(part.norm, _LOWER_STOP))

    def piece_registered(token: str) -> bool:
        return 2 <= len(token) <= _MAX_NAME_LENGTH and token not in PARTICLES \
            and not _is_stop(token) and registered(token)

    def handle_prefix(word: _Word) -> bool:
        return word.start > 0 and text[word.start - 1] in "#@"

    def joined_names(norm: str) -> bool:
        """"#sarayilmaz": two registered names written as one word (asked only of handles and
        of letters written apart, not of every word: each cut is one more question)."""
        return len(norm) <= _MAX_NAME_LENGTH and any(
            piece_registered(norm[:cut]) and piece_registered(norm[cut:])
            for cut in range(2, len(norm) - 1))

    found: set[int] = set()
    for w, word in enumerate(words):
        if _names_no_person(word):
            continue
        for p, part in enumerate(word.parts):
            if (w, p) in shielded:
                continue
            # The parts of a joined word are asked however long it is: "#SaraYilmazWartet...".
            as_word = askable(w, p, part) and not ordinary(part) and registered(part.norm)
            as_handle = askable(w, p, part) and handle_prefix(word) and len(word.parts) == 1 \
                and joined_names(part.norm)
            if as_word or as_handle \
                    or any(piece_registered(piece) for piece in _camel_pieces(part.raw)):
                found.add(w)
                break
    # A stop word is asked in a name-like position after all: after a title ("frau sommer"),
    # between two names ("Ayşe Nur Yıldırım"), or after a name in the same case ("jonas sommer",
    # "Jonas Sommer"); it is then as personal as the rest.
    for w in range(1, len(words)):
        word = words[w]
        if w in found or len(word.parts) != 1 or not askable(w, 0, word.parts[0]):
            continue
        part = word.parts[0]
        before = words[w - 1]
        lower = not _capitalised(part.raw)
        after_title = len(before.parts) == 1 and before.parts[0].norm in _TITLE_WORDS \
            and re.fullmatch(r"\.?[ \u00a0]{1,3}", text[before.end:word.start]) is not None \
            and part.norm not in _FUNCTION
        after_name = w - 1 in found and _spaced(text, before, word) \
            and lower == (not _capitalised(before.parts[-1].raw)) \
            and not (lower and part.norm in _FUNCTION)
        between = w - 1 in found and w + 1 < len(words) and w + 1 in found \
            and _spaced(text, before, word) and _spaced(text, word, words[w + 1])
        if (after_title or after_name or between) and registered(part.norm):
            found.add(w)
    for match in _SPACED_LETTERS_RE.finditer(text):
        joined = match.group().replace(" ", "")
        norm = normalise_name_token(joined)
        if (len(norm) <= _MAX_NAME_LENGTH and not _is_stop(norm) and registered(norm)) \
                or any(piece_registered(piece) for piece in _camel_pieces(joined)) \
                or joined_names(norm):
            yield _Raw(match.start(), match.end(), "name")
    handles = [(m.start(), m.end()) for m in _HANDLE_RE.finditer(text)]
    handle_starts = [start for start, _ in handles]
    for w in sorted(found):
        start, end = words[w].start, words[w].end
        # Take in a foreign particle right before: "El Amrani", not "Amrani" alone.
        before = words[w - 1] if w > 0 else None
        if before is not None and len(before.parts) == 1 \
                and before.parts[0].norm in _FOREIGN_PARTICLES and _spaced(text, before, words[w]):
            start = before.start
        # And the whole handle the name is written in: "#SaraYilmaz", "@sara.yilmaz".
        k = bisect_right(handle_starts, words[w].start) - 1
        if k >= 0 and handles[k][0] <= words[w].start and words[w].end <= handles[k][1]:
            start, end = min(start, handles[k][0]), max(end, handles[k][1])
        yield _Raw(start, end, "name")


# --- merging and messages --------------------------------------------------------------------

# Which kind speaks for a group of overlapping hits of equal length.
_PRIORITY = {"email": 7, "phone": 6, "file_number": 5, "birth_date": 4, "date": 3, "address": 2,
             "name": 1}
_DEFAULT_WHAT = {
    "name": "den Namen", "birth_date": "das Geburtsdatum", "date": "das Datum",
    "file_number": "die Kennnummer", "address": "die Anschrift", "phone": "die Telefonnummer",
    "email": "die E-Mail-Adresse",
}
# Same-kind hits separated only by this are one thing to remove: "Leyla Ahmadi",
# "Lindenstraße 14, 58452 Wittmar".
_JOIN_GAP = {"name": re.compile(r"[ \u00a0]{1,3}"),
             "address": re.compile(r"[ \u00a0]*,?[ \u00a0]*")}


def _message(kind: str, excerpt: str, what: str | None) -> str:
    quoted = " ".join(excerpt.split())
    text = f"Bitte {what or _DEFAULT_WHAT[kind]} '{quoted}' entfernen"
    if kind == "date":
        limit = BIRTH_DATE_YEAR_LIMIT
        return f"{text}: ein tagesgenaues Datum vor {limit} kann ein Geburtsdatum sein."
    return text + "."


def _finish(text: str, raw: Iterable[_Raw]) -> list[Hit]:
    ordered = sorted(raw, key=lambda r: (r.start, -r.end))
    groups: list[list[_Raw]] = []
    group_end = -1
    for item in ordered:
        if item.end <= item.start:
            continue
        if groups and item.start < group_end:
            groups[-1].append(item)
        else:
            groups.append([item])
        group_end = max(group_end, item.end)
    merged: list[_Raw] = []
    for group in groups:
        lead = max(group, key=lambda r: (r.end - r.start, _PRIORITY[r.kind]))
        start, end = min(r.start for r in group), max(r.end for r in group)
        previous = merged[-1] if merged else None
        joiner = _JOIN_GAP.get(lead.kind)
        if previous is not None and previous.kind == lead.kind and joiner is not None \
                and joiner.fullmatch(text[previous.end:start]):
            merged[-1] = _Raw(previous.start, end, lead.kind, previous.what or lead.what)
        else:
            merged.append(_Raw(start, end, lead.kind, lead.what))
    hits = []
    for r in merged:
        excerpt = text[r.start:r.end]
        hits.append(Hit(r.kind, r.start, r.end, excerpt, _message(r.kind, excerpt, r.what)))
    return hits


def scan(
    text: str,
    is_known_name: Callable[[str], bool] | None = None,
    vocabulary: frozenset[str] = frozenset(),
) -> list[Hit]:
    """Every place in ``text`` that looks like personal data, in order, overlaps merged.

    ``is_known_name(token)`` answers whether a token normalised with ``normalise_name_token`` is a
    given or family name token of a person in the system (index them with ``name_tokens``);
    without it only the patterns apply. ``vocabulary`` holds the domain's own names (towns,
    organisations, barrier categories), which are never taken for a person's name.
    """
    vocabulary = frozenset(vocabulary)
    plain = _plain_view(text)
    digits = _collapse(plain)
    words_as_digits = _number_words(plain)
    spoken = digits if words_as_digits is plain else _collapse(words_as_digits)
    found: list[tuple[_View, Iterable[_Raw]]] = [(plain, _emails(plain.text))]
    # The digit patterns run on the collapsed copies and on the plain one: collapsing joins what
    # stands next to a number ("Q3 / 0171 2345678" -> "Q3/0171 2345678"), so a number the plain
    # text shows must not get lost in the collapsed one.
    for view in (plain, spoken) if spoken is not plain else (plain,):
        found += [(view, _phones(view.text)), (view, _dates(view.text))]
    for view in (plain, digits) if digits is not plain else (plain,):
        found += [(view, _file_numbers(view.text)), (view, _addresses(view.text, vocabulary))]
    words = _words(plain.text)
    shielded = _shielded(words, vocabulary)
    found.append((plain, _titled_names(plain.text, words, shielded)))
    if is_known_name is not None:
        found.append((plain, _known_names(plain.text, words, shielded, is_known_name)))
    raw = [mapped for view, hits in found for hit in hits
           if (mapped := view.original(hit)) is not None]
    return _finish(text, raw)
