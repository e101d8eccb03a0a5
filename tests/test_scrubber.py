"""The personal-data check of conference findings: the corpus of invented findings, each pattern
with its near misses, the closed-world name check, and properties over generated text."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemgmt.conferences.scrubber import (
    KINDS,
    STOP_WORDS,
    Hit,
    name_tokens,
    normalise_name_token,
    scan,
)

CORPUS_FILE = Path(__file__).parent / "data" / "findings_corpus.yaml"
CORPUS = yaml.safe_load(CORPUS_FILE.read_text("utf-8"))
VOCABULARY = frozenset(CORPUS["vocabulary"])
CLEAN: list[str] = CORPUS["clean"]
DIRTY: list[dict] = CORPUS["dirty"]

# The service is to answer is_known_name from a keyed blind index over the name tokens of its
# records; the test does the same, so only digests of the registered names are compared.
_KEY = b"test blind index key"


def _digest(token: str) -> str:
    return hmac.new(_KEY, token.encode(), hashlib.sha256).hexdigest()


_INDEX = frozenset(
    _digest(token)
    for person in CORPUS["registered"]
    for field in person.values()
    for token in name_tokens(field)
)


def is_known_name(token: str) -> bool:
    return _digest(token) in _INDEX


def kinds(hits: list[Hit]) -> set[str]:
    return {hit.kind for hit in hits}


def found(text: str, **kwargs) -> list[tuple[str, str]]:
    return [(hit.kind, hit.excerpt) for hit in scan(text, **kwargs)]


# --- the corpus ------------------------------------------------------------------------------

def test_corpus_is_big_enough_and_covers_every_kind():
    assert len(CLEAN) >= 35 and len(DIRTY) >= 30
    assert len(set(CLEAN)) == len(CLEAN)
    expected = {kind for finding in DIRTY for kind in finding["kinds"]}
    assert expected == set(KINDS)
    assert sum(bool(finding.get("closed_world")) for finding in DIRTY) >= 10


@pytest.mark.parametrize("text", CLEAN, ids=[f"clean{i}" for i in range(len(CLEAN))])
def test_clean_finding_has_no_hits(text):
    assert scan(text, is_known_name, VOCABULARY) == []


@pytest.mark.parametrize("finding", DIRTY, ids=[f"dirty{i}" for i in range(len(DIRTY))])
def test_dirty_finding_has_exactly_the_expected_hits(finding):
    hits = scan(finding["text"], is_known_name, VOCABULARY)
    assert kinds(hits) == set(finding["kinds"])
    assert [hit.excerpt for hit in hits] == finding["remove"]


@pytest.mark.parametrize("finding", DIRTY, ids=[f"dirty{i}" for i in range(len(DIRTY))])
def test_without_the_registry_only_the_patterns_find_it(finding):
    expected = set(finding["kinds"]) - ({"name"} if finding.get("closed_world") else set())
    assert kinds(scan(finding["text"], None, VOCABULARY)) == expected


def redact(text: str, hits: list[Hit]) -> str:
    for hit in reversed(hits):
        text = text[:hit.start] + "[entfernt]" + text[hit.end:]
    return text


@pytest.mark.parametrize("finding", DIRTY, ids=[f"dirty{i}" for i in range(len(DIRTY))])
def test_removing_what_the_hits_name_makes_the_finding_clean(finding):
    hits = scan(finding["text"], is_known_name, VOCABULARY)
    assert scan(redact(finding["text"], hits), is_known_name, VOCABULARY) == []


# --- hits: spans, order, messages ------------------------------------------------------------

def test_hit_spans_point_at_the_text_to_remove():
    text = "Frau Ahmadi (geb. 12.03.1988) ist unter 0171 2345678 oder m.a@example.org erreichbar."
    hits = scan(text)
    assert [(h.kind, h.excerpt) for h in hits] == [
        ("name", "Ahmadi"), ("birth_date", "12.03.1988"), ("phone", "0171 2345678"),
        ("email", "m.a@example.org"),
    ]
    for hit in hits:
        assert text[hit.start:hit.end] == hit.excerpt


@pytest.mark.parametrize(("text", "kind", "words"), [
    ("Herr Tesfamichael wartet.", "name", ["Namen", "'Tesfamichael'"]),
    ("Geboren am 03.03.1990 in Kabul.", "birth_date", ["Geburtsdatum", "'03.03.1990'"]),
    ("Seit dem 03.03.1999 ohne Kurs.", "date",
     ["Datum", "'03.03.1999'", "vor 2010", "Geburtsdatum"]),
    ("Az. 32.1-4711/24 liegt vor.", "file_number", ["Aktenzeichen", "'32.1-4711/24'"]),
    ("Kundennummer 123D456789 doppelt.", "file_number", ["Kundennummer", "'123D456789'"]),
    ("Er wohnt Lindenstraße 14 in Wittmar.", "address", ["Anschrift", "'Lindenstraße 14'"]),
    ("Rückruf unter 0171/1234567.", "phone", ["Telefonnummer", "'0171/1234567'"]),
    ("Mail an a.b@example.org schicken.", "email", ["E-Mail-Adresse", "'a.b@example.org'"]),
])
def test_messages_say_in_german_what_to_remove(text, kind, words):
    [hit] = scan(text)
    assert hit.kind == kind
    assert hit.message.startswith("Bitte ") and "entfernen" in hit.message
    for word in words:
        assert word in hit.message


def test_the_name_message_reads_as_asked():
    [hit] = scan("Frau Ahmadi hat keinen Kursplatz.")
    assert hit.message == "Bitte den Namen 'Ahmadi' entfernen."


def test_overlapping_hits_are_merged_into_the_longest():
    # The name inside the address, the name inside the e-mail address, the phone-shaped digits
    # inside the IBAN: one hit each, of the kind that covers the whole.
    known = {"jakob", "leyla", "ahmadi"}.__contains__
    assert found("Jakob-Wessel-Straße 12 ist belegt.", is_known_name=known) == [
        ("address", "Jakob-Wessel-Straße 12")]
    assert found("Schreiben an Leyla.Ahmadi@example.org", is_known_name=known) == [
        ("email", "Leyla.Ahmadi@example.org")]
    assert found("IBAN DE12 3704 0044 0532 0130 00 liegt vor") == [
        ("file_number", "DE12 3704 0044 0532 0130 00")]


def test_neighbouring_parts_of_one_thing_become_one_hit():
    known = {"leyla", "ahmadi"}.__contains__
    assert found("Leyla Ahmadi wartet.", is_known_name=known) == [("name", "Leyla Ahmadi")]
    assert found("Lindenstraße 14, 58452 Wittmar") == [
        ("address", "Lindenstraße 14, 58452 Wittmar")]
    # Separated by more than a space, they stay apart.
    assert found("Leyla und Ahmadi warten.", is_known_name=known) == [
        ("name", "Leyla"), ("name", "Ahmadi")]


def test_hits_are_ordered_and_do_not_overlap():
    text = " ".join(finding["text"] for finding in DIRTY[:12])
    hits = scan(text, is_known_name, VOCABULARY)
    assert all(a.end <= b.start for a, b in zip(hits, hits[1:]))


# --- patterns and their near misses -----------------------------------------------------------

@pytest.mark.parametrize(("text", "excerpt"), [
    ("an leyla.alhassan@example.org schreiben", "leyla.alhassan@example.org"),
    ("Mail: m.rahimi-privat@example.net.", "m.rahimi-privat@example.net"),
    ("über dragana.k[at]example.org erreichbar", "dragana.k[at]example.org"),
    ("über x (at) beispiel.de erreichbar", "x (at) beispiel.de"),
    ("Kontakt: ÄÖÜ.ß@example.de", "ÄÖÜ.ß@example.de"),
])
def test_email(text, excerpt):
    assert found(text) == [("email", excerpt)]


@pytest.mark.parametrize("text", [
    "Das Jobcenter ist per Mail erreichbar, die Adresse steht auf dem Bescheid.",
    "Das Team @jobcenter_ennetal antwortet nicht.",
    "foo@bar ohne Domain",
    "Die Quote liegt bei 5 @ 3 Fällen.",
])
def test_email_near_misses(text):
    assert found(text) == []


@pytest.mark.parametrize(("text", "excerpt"), [
    ("Tel. 0171 2345678", "0171 2345678"),
    ("unter 0171/1234567 erreichbar", "0171/1234567"),
    ("unter 0171-1234567 erreichbar", "0171-1234567"),
    ("unter 0171 / 123 45 67 erreichbar", "0171 / 123 45 67"),
    ("unter 0 2302 12345 erreichbar", "0 2302 12345"),
    ("unter (02302) 12345 erreichbar", "(02302) 12345"),
    ("auf (0100) 10000 Kostenübernahme", "(0100) 10000"),
    ("unter 02302-12345-17 erreichbar", "02302-12345-17"),
    ("unter +49 2302 987654 erreichbar", "+49 2302 987654"),
    ("unter +49 (0)2331 4455667 erreichbar", "+49 (0)2331 4455667"),
    ("unter 0049 171 2345678 erreichbar", "0049 171 2345678"),
    ("unter +4917123456789 erreichbar", "+4917123456789"),
    ("syrische Nummer +963 944 123 456", "+963 944 123 456"),
    ("Handynummer 015298765432", "015298765432"),
    ("Tel. 23456 (Unterkunft)", "23456"),
    ("Telefon: 12 34 56", "12 34 56"),
])
def test_phone(text, excerpt):
    assert found(text) == [("phone", excerpt)]


@pytest.mark.parametrize("text", [
    "Im Jahr 2024 kamen 120 Personen, 2025 waren es 12 Fälle mehr.",
    "Die Behördennummer 115 hilft nicht.",
    "Die Servicenummer 0800 ist überlastet.",
    "Laufzeit 05/2024 - 09/2025, Stand 01/2025.",
    "Im Schuljahr 2024/2025 und im Q1/2025 und in der KW 12/2025.",
    "0 von 24 Plätzen frei, 0,5 Stellen unbesetzt, Quote 0 / 12 / 15.",
    "Von 1.120 (2023) auf 1.380 (2024), ein Plus von +156 %.",
    "Sprechzeiten Mo–Fr 8:00–12:30 Uhr, Durchwahl -12.",
    "Ein Budget von 1200000 Euro für 15000 Einwohner.",
    "Verordnung (EU) 2016/679, § 44 AufenthG, SGB II.",
    "Tel. Sprechstunde montags, Telefon 2025 umgestellt.",
])
def test_phone_near_misses(text):
    assert found(text) == []


@pytest.mark.parametrize(("text", "kind", "excerpt"), [
    ("Die Frau, geb. 12.03.1988, wartet.", "birth_date", "12.03.1988"),
    ("geboren am 3. März 1990 in Kabul", "birth_date", "3. März 1990"),
    ("geboren in Kabul am 3.4.2015", "birth_date", "3.4.2015"),
    ("Geburtsdatum: 2012-09-30", "birth_date", "2012-09-30"),
    ("Das Kind (* 2015-06-21) wartet.", "birth_date", "2015-06-21"),
    ("Die Jugendliche, geb. 05.11.07, wartet.", "birth_date", "05.11.07"),
    ("geb. 3.4. in Aleppo", "birth_date", "3.4."),
    ("Tesfay (geb. 1999) wartet.", "birth_date", "1999"),
    ("geboren im März 2016", "birth_date", "März 2016"),
    ("Geburtsjahr: 2001", "birth_date", "2001"),
    ("Selamawit G., 14.07.1986, wartet.", "date", "14.07.1986"),
    ("seit dem 3.4.90", "date", "3.4.90"),
    ("seit dem 01.01.2009", "date", "01.01.2009"),
    ("am 3. April 1990", "date", "3. April 1990"),
    ("am 3 Apr. 1990", "date", "3 Apr. 1990"),
    ("am 1990-04-03", "date", "1990-04-03"),
    ("Zuwanderungsgesetz vom 30. Juli 2004", "date", "30. Juli 2004"),
])
def test_dates(text, kind, excerpt):
    assert found(text) == [(kind, excerpt)]


@pytest.mark.parametrize("text", [
    "Seit dem 01.03.2025 gilt die neue Regelung.",
    "Zum 1. Januar 2025 wechselt die Zuständigkeit, ab 2024-04-03 das Verfahren.",
    "Die Regel gilt seit 01.01.10 und seit dem 3.4.24.",
    "Im März 2024 und im Q1/2025 und zum Stand 01/2025.",
    "Am 3.4. tagte die Konferenz, am 1. Januar endet die Frist.",
    "Kinder, die 2019 geboren wurden, warten auf Kitaplätze.",
    "Als Geburtsdatum ist oft nur der 1. Januar eingetragen.",
    "Version 1.2.3, Ziffer 3.1.2, Abschnitt 4.2.",
    "Das Zuwanderungsgesetz von 2005.",
    "Mitarbeiter*innen 2019 bis 2024 befragt.",
    "Bevölkerung 1.200.000, davon 31.12. Stichtag.",
])
def test_date_near_misses(text):
    assert found(text) == []


@pytest.mark.parametrize(("text", "excerpt"), [
    ("Die BG-Nummer 36202BG0012345 fehlt.", "36202BG0012345"),
    ("unter der Nummer 36202BG0012345 geführt", "36202BG0012345"),
    ("BG-Nr. 36202-0012345 fehlt.", "36202-0012345"),
    ("Der Bescheid 7654321-423 des BAMF fehlt.", "7654321-423"),
    ("Az. 32.1-4711/24 liegt vor.", "32.1-4711/24"),
    ("AZ: 4711/2023 liegt vor.", "4711/2023"),
    ("Aktenzeichen ABH-2023-00451 liegt vor.", "ABH-2023-00451"),
    ("Geschäftszeichen 51.2 - 123 liegt vor.", "51.2 - 123"),
    ("Kundennummer 123D456789 doppelt.", "123D456789"),
    ("Die Akte BG-36202-0012345 fehlt.", "BG-36202-0012345"),
    ("Die Sozialversicherungsnummer 65 170890 K 512 ist falsch.", "65 170890 K 512"),
    ("Steuer-ID 12345678901 fehlt.", "12345678901"),
    ("an DE12 3704 0044 0532 0130 00 überwiesen", "DE12 3704 0044 0532 0130 00"),
    ("AZR-Nummer 100234567890 fehlt.", "100234567890"),
])
def test_file_numbers(text, excerpt):
    assert found(text) == [("file_number", excerpt)]


@pytest.mark.parametrize("text", [
    "Akten werden ohne Aktenzeichen weitergegeben; Kundennummern werden doppelt vergeben.",
    "Das Aktenzeichen fehlt in 12 Fällen.",
    "B1-Kurs, A2-Niveau, 2024er Jahrgang, COVID-19, H264.",
    "Q1/2025 und Richtlinie 2011/95/EU und KdU-Richtlinie 2025.",
    "12345 Personen und 1234567 Euro.",
    "Die Formulare A1 bis A12 fehlen.",
])
def test_file_number_near_misses(text):
    assert found(text) == []


@pytest.mark.parametrize(("text", "excerpt"), [
    ("wohnt in der Lindenstraße 14 in Hattenberg", "Lindenstraße 14"),
    ("wohnt in der Hauptstrasse 3", "Hauptstrasse 3"),
    ("wohnt in der Hauptstr. 5, bei Bekannten", "Hauptstr. 5"),
    ("wohnt in der Kölner Str. 45 in Schwelbach", "Kölner Str. 45"),
    ("wohnt in der Hagener Straße 101a.", "Hagener Straße 101a"),
    ("wohnt Am Ring 3a, bei Bekannten", "Am Ring 3a"),
    ("wohnt An der Kirche 5.", "An der Kirche 5"),
    ("wohnt Im Siepen 2.", "Im Siepen 2"),
    ("wohnt im Bahnhofsweg 7 bei Bekannten", "Bahnhofsweg 7"),
    ("wohnt in der Jakob-Wessel-Straße 12", "Jakob-Wessel-Straße 12"),
    ("wohnt Am Mühlenbach 12-14", "Am Mühlenbach 12-14"),
    ("wohnt in der Lindenallee Nr. 4", "Lindenallee Nr. 4"),
    ("wohnt am Marktplatz 3", "Marktplatz 3"),
    ("Post an 58452 Wittmar", "58452 Wittmar"),
    ("Post an D-58452 Wittmar", "D-58452 Wittmar"),
])
def test_addresses(text, excerpt):
    assert found(text) == [("address", excerpt)]


@pytest.mark.parametrize("text", [
    "In der Hauptstraße gibt es eine Beratungsstelle; der Marktplatz ist barrierefrei.",
    "Hauptstraße 12 Wohnungen stehen leer.",
    "Kitaplatz 3 von 20, Ausbildungsplatz 2, Bildungsweg 2, Arbeitsplatz 1.",
    "Am Montag 3 neue Anmeldungen, am Ende 5 Plätze, im Kreis 12 Kitas.",
    "Im Jahr 2023 und am Standort 4 Kurse.",
    "Auf dem Arbeitsmarkt 3 Jahre ohne Stelle.",
    "Hattenberg hat 26000 Einwohner und 15000 Menschen mit Einwanderungsgeschichte.",
    "Die Zuweisung erfolgt nach § 12a AufenthG, Platz 1 im Ranking.",
    "Für 12000 Anträge fehlen 5 Sachbearbeitende.",
    "Das Konzept Wege 2 Arbeit ist gescheitert.",
])
def test_address_near_misses(text):
    assert found(text) == []


@pytest.mark.parametrize(("text", "excerpt"), [
    ("Frau Ahmadi wartet.", "Ahmadi"),
    ("Herrn Mebrahtu erreicht niemand.", "Mebrahtu"),
    ("Familie al-Hassan wartet.", "al-Hassan"),
    ("Familie El Amrani wartet.", "El Amrani"),
    ("Herr von Brenkhausen vermietet nicht.", "von Brenkhausen"),
    ("Frau Dr. med. Adebayo-Wessel lehnt ab.", "Adebayo-Wessel"),
    ("Frau Leyla Ahmadi wartet.", "Leyla Ahmadi"),
    ("Fr. Ahmadi wartet.", "Ahmadi"),
    ("Hr. Yilmaz wartet.", "Yilmaz"),
    # Names that are German words too: after a title they are names.
    ("Frau Neumann, Herr Hartmann.", "Neumann"),
    ("Familie Sommer wartet.", "Sommer"),
    ("Frau Nur wartet.", "Nur"),
    ("Frau AHMADI wartet.", "AHMADI"),
    ("Frau Richter und Herr Mann warten.", "Richter"),
    ("Frau Bürgermeisterin Klein hat zugesagt.", "Klein"),
    # An initial points at the person as well as the name does, in a conference of a few cases.
    ("Frau A. wartet.", "A"),
])
def test_title_makes_a_name(text, excerpt):
    assert found(text)[0] == ("name", excerpt)


def test_a_title_takes_in_particles_but_no_following_preposition():
    assert found("Herr Brenkhausen vom Vermieterverein lehnt ab.") == [("name", "Brenkhausen")]
    assert found("Frau Dr. Adebayo-Wessel von der Schule lehnt ab.") == [("name", "Adebayo-Wessel")]
    assert found("Frau Leyla El Amrani wartet.") == [("name", "Leyla El Amrani")]
    assert found("Herr von der Heide wartet.") == [("name", "von der Heide")]


@pytest.mark.parametrize("text", [
    "Frau und Kinder kommen nach; Familie und Beruf sind nicht vereinbar.",
    "Frau Bürgermeisterin hat zugesagt, Herr Landrat auch.",
    "Es fehlt die Frau Bürgermeisterin. Kurse fallen aus.",
    "Für die Familie Sprachmittlung zu organisieren dauert Wochen.",
    "Der Frau Deutschkurse anzubieten scheitert an der Kinderbetreuung.",
    "Betroffen ist eine Frau. Sprachkurse fehlen.",
    "Die Familie, Kinder und Eltern.",
    "Frauen Syriens und Familien Afghanistans.",
    "Für eine Frau Kitaplätze zu finden ist schwer.",
    "Sprechzeiten Mo. und Fr. Vormittag, Do. und Fr. Nachmittag, Fr. 9-12 Uhr.",
])
def test_title_near_misses(text):
    assert found(text) == []


def test_vocabulary_after_a_title_is_no_name():
    assert found("Eine Familie von Hattenberg zog nach Wittmar.", vocabulary=VOCABULARY) == []


# --- the closed-world check ------------------------------------------------------------------

class Recorder:
    """An is_known_name that remembers what it was asked."""

    def __init__(self, *names: str):
        self.known = {token for name in names for token in name_tokens(name)}
        self.asked: list[str] = []

    def __call__(self, token: str) -> bool:
        self.asked.append(token)
        return token in self.known


def test_a_bare_registered_name_is_found_only_with_the_registry():
    text = "Yohannes hat seit vier Monaten keinen Kursplatz."
    assert found(text) == []
    assert found(text, is_known_name=Recorder("Yohannes")) == [("name", "Yohannes")]


def test_only_name_like_words_are_asked_and_normalised():
    recorder = Recorder()
    scan("Die Wartezeiten für Çelik-Öztürk sind in Wittmar lang; Jobcenter und KI warten.",
         recorder, frozenset({"Wittmar"}))
    # Stop words and vocabulary are not asked; every other word is, lower-case ones too (the
    # service answers from the names on the conference's own agenda), only in normal form.
    assert {"celik", "ozturk", "warten"} <= set(recorder.asked)
    assert not {"wittmar", "jobcenter", "ki", "die", "lang", "sind", "und"} & set(recorder.asked)
    assert all(token == normalise_name_token(token) for token in recorder.asked)


def test_registered_names_that_are_common_words_do_not_refuse_clean_text():
    recorder = Recorder("Jonas Sommer", "Arben Lange", "Ayşe Nur")
    text = "Im Sommer fallen Kurse aus. Lange Wartezeiten. Nur 12 Plätze."
    assert found(text, is_known_name=recorder) == []


def test_a_registered_stop_word_between_two_names_is_part_of_the_name():
    recorder = Recorder("Ayşe Nur Yıldırım")
    assert found("Ayşe Nur Yıldırım wartet. Nur Ayşe wartet.", is_known_name=recorder) == [
        ("name", "Ayşe Nur Yıldırım"), ("name", "Ayşe")]


def test_vocabulary_shields_whole_phrases_only():
    recorder = Recorder("Marta Kessler", "Karl Hagenau")
    vocabulary = frozenset({"Marta-Kessler-Schule", "Hagenau"})
    assert found("In Hagenau fehlen Plätze.", is_known_name=recorder, vocabulary=vocabulary) == []
    assert found("In Hagenau fehlen Plätze.", is_known_name=recorder) == [("name", "Hagenau")]
    text = "Im Haus Kessler fehlen Plätze; Kessler wartet."
    [hit] = scan(text, recorder, frozenset({"Haus Kessler"}))
    assert (hit.kind, hit.start, hit.excerpt) == ("name", text.rindex("Kessler"), "Kessler")


def test_compounds_naming_institutions_or_streets_are_not_names():
    recorder = Recorder("Jakob Wessel", "Marta Kessler")
    text = "Die Jakob-Wessel-Straße und die Marta-Kessler-Schule."
    assert found(text, is_known_name=recorder) == []


def test_genitive_spelling_and_case_variants_are_found():
    recorder = Recorder("Leyla Yıldırım", "Dragana Kovačević")
    assert found("Leylas Kurs fiel aus.", is_known_name=recorder) == [("name", "Leylas")]
    assert found("Leyla's Kurs fiel aus.", is_known_name=recorder) == [("name", "Leyla's")]
    assert found("Bei YILDIRIM und Kovacevic.", is_known_name=recorder) == [
        ("name", "YILDIRIM"), ("name", "Kovacevic")]
    assert found("Bei Yildirim.", is_known_name=recorder) == [("name", "Yildirim")]


def test_names_in_scripts_without_case_are_asked():
    recorder = Recorder("يوسف")
    assert found("Der Antrag von يوسف liegt vor.", is_known_name=recorder) == [("name", "يوسف")]


def test_month_names_win_over_given_names_except_abbreviations_of_names():
    recorder = Recorder("Mai Nguyen", "Jan Berisha")
    assert found("Im Mai und im Jan. 2025 fielen Kurse aus.", is_known_name=recorder) == []
    assert found("Jan wartet auf einen Kurs.", is_known_name=recorder) == [("name", "Jan")]


# --- normalisation ---------------------------------------------------------------------------

@pytest.mark.parametrize(("a", "b"), [
    ("Müller", "MULLER"), ("Mu\u0308ller", "Müller"), ("Strauß", "strauss"),
    ("STRAU\u1e9e", "strauss"), ("Yıldırım", "Yildirim"), ("Kovačević", "kovacevic"),
    ("Đorđević", "dordevic"), ("Øren", "oren"),
    ("O'Brien", "obrien"), ("Ǆoković", "dzokovic"), ("Ｙｏｈａｎｎｅｓ", "yohannes"), ("Leyla.", "leyla"),
])
def test_normalise_name_token_folds_case_accents_and_punctuation(a, b):
    assert normalise_name_token(a) == normalise_name_token(b)


def test_normalise_name_token_keeps_what_differs():
    assert normalise_name_token("Müller") != normalise_name_token("Mueller")  # no transcription
    assert normalise_name_token("Meyer") != normalise_name_token("Meier")
    assert normalise_name_token("يوسف") == "يوسف"


def test_name_tokens_split_and_drop_particles():
    assert name_tokens("Leyla al-Hassan") == ["leyla", "hassan"]
    assert name_tokens("  Ayşe   Nur ") == ["ayse", "nur"]
    assert name_tokens("von der Heide-Krasniqi") == ["heide", "krasniqi"]
    assert name_tokens("Abd al-Rahman Abd") == ["abd", "rahman"]
    assert name_tokens("J. Yilmaz") == ["yilmaz"]


def test_stop_list_is_normalised():
    assert all(word == normalise_name_token(word) for word in STOP_WORDS)
    assert {"jobcenter", "sozialamt", "frau", "familie", "sommer", "nur"} <= STOP_WORDS


# --- properties ------------------------------------------------------------------------------

REGISTERED_NAMES = ["Yohannes", "Selamawit", "Gebrekidan", "Tesfamichael", "Karimi", "Omid",
                    "Parisa", "Dragana", "Kovačević", "Yıldırım", "Haddadin", "Mebrahtu"]

_local = st.from_regex(r"[a-z][a-z0-9]{0,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
_domain = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9](?:\.[a-z]{2,8})?\.[a-z]{2,6}",
                        fullmatch=True)
emails = st.builds(lambda local, domain: f"{local}@{domain}", _local, _domain)


@st.composite
def phones(draw) -> str:
    area = draw(st.from_regex(r"[1-9][0-9]{1,4}", fullmatch=True))
    subscriber_length = draw(st.integers(min_value=max(3, 8 - len(area)), max_value=13 - len(area)))
    subscriber = draw(st.from_regex(rf"[1-9][0-9]{{{subscriber_length - 1}}}", fullmatch=True))
    form = draw(st.sampled_from(["0{a} {s}", "0{a}/{s}", "0{a}-{s}", "0{a} / {s}", "(0{a}) {s}",
                                 "+49 {a} {s}", "+49 (0){a} {s}", "0049 {a} {s}", "0{a}{s}"]))
    return form.format(a=area, s=subscriber)


def _insert(text: str, where: int, piece: str) -> tuple[str, int, int]:
    """Insert between words; returns the new text and the piece's span."""
    gaps = [0] + [m.start() + 1 for m in re.finditer(" ", text)]
    at = gaps[where % len(gaps)]
    new = text[:at] + piece + " " + text[at:]
    return new, at, at + len(piece)


def _covered(hits: list[Hit], kind: str, start: int, end: int) -> bool:
    return any(h.kind == kind and h.start <= start and end <= h.end for h in hits)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CLEAN), st.integers(min_value=0, max_value=200),
       st.one_of(emails.map(lambda e: ("email", e)), phones().map(lambda p: ("phone", p)),
                 st.sampled_from(REGISTERED_NAMES).map(lambda n: ("name", n))))
def test_inserting_personal_data_into_a_clean_finding_makes_it_dirty(clean, where, item):
    kind, piece = item
    text, start, end = _insert(clean, where, piece)
    hits = scan(text, is_known_name, VOCABULARY)
    # A number put right next to other digits ("KW 01000 100000 12/2025") may read as another
    # kind of number as a whole; what matters is that all of it is refused.
    number_run = kind == "phone" and any(
        h.kind in ("file_number", "date", "birth_date", "address") and h.start <= start and end <= h.end
        for h in hits)
    assert _covered(hits, kind, start, end) or number_run, (text, hits)
    assert scan(redact(text, hits), is_known_name, VOCABULARY) == []


@settings(max_examples=200, deadline=None)
@given(phones())
def test_generated_phone_numbers_are_found_alone(phone):
    assert found(f"Rückruf unter {phone} erbeten.") == [("phone", phone)]


@settings(max_examples=200, deadline=None)
@given(emails)
def test_generated_email_addresses_are_found_alone(email):
    assert found(f"Rückfragen an {email} schicken.") == [("email", email)]


def _check_hits(text: str, hits: list[Hit]) -> None:
    for hit in hits:
        assert hit.kind in KINDS
        assert 0 <= hit.start < hit.end <= len(text)
        assert hit.excerpt == text[hit.start:hit.end]
        assert hit.message.startswith("Bitte ")
    assert all(a.end <= b.start for a, b in zip(hits, hits[1:]))


# Arbitrary text, NUL and emoji included, salted with the pieces the patterns start from.
_wild_text = st.lists(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
    | st.sampled_from(["\x00", " ", ".", "-", "/", "@", "(0)", "+49 ", "0171 ", "1234567", "3.4.",
                       "1990", "Frau ", "Familie al-", "geb. ", "Az. ", "straße ", "Am Ring ",
                       "58452 ", "😀", "\u0308", "Yohannes", "[at]", "Tel. ", "\n"]),
    max_size=40,
).map("".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_wild_text)
def test_scan_never_raises_and_hits_are_well_formed(text):
    for known in (None, lambda token: True, is_known_name):
        _check_hits(text, scan(text, known, VOCABULARY))


@pytest.mark.parametrize("text", [
    "A" * 50_000, "0" * 50_000, "1." * 25_000, "a@" * 25_000, "Frau " + "A" * 50_000,
    "A-" * 25_000, "0 " * 25_000, "1 Januar " * 5_000, "geb. " * 10_000, "+4" * 25_000,
    "Lindenstraße 1 " * 5_000, "x.y" * 20_000 + "@", "(0) " * 20_000, "geb. 1.1.1990 " * 5_000,
    "Frau Ahmadi, geb. 1990, Tel. 0171 2345678, a@b.de, Am Ring 3, 58452 Wittmar, Az. 1234. " * 800,
])
def test_long_and_degenerate_input_is_scanned_in_linear_time(text):
    started = time.perf_counter()
    _check_hits(text, scan(text, lambda token: True, VOCABULARY))
    assert time.perf_counter() - started < 10  # a quadratic path takes minutes here


# --- bypasses: written differently to slip past the patterns -----------------------------------
# Each was found by an attacker test of the first scanner; the scan now matches on normalised
# copies of the text (NFKC, spaced digits and separators collapsed, number words as digits) and
# still reports the original characters.

SARA = Recorder("Sara Yılmaz", "Omid Rahimi", "Jonas Sommer", "Ayşe Nur Yıldırım")

BYPASSES = {
    "name_lower_case": [
        ("sara yilmaz wartet.", "name", "sara yilmaz"),
        ("Der Kurs von sara yılmaz fiel aus.", "name", "sara yılmaz"),
        ("SARA YILMAZ wartet.", "name", "SARA YILMAZ"),
        ("jonas sommer wartet.", "name", "jonas sommer"),
        ("die familie sommer wartet.", "name", "sommer"),
        ("bei frau yilmaz fehlt der nachweis.", "name", "yilmaz"),
        ("ayşe nur yıldırım wartet.", "name", "ayşe nur yıldırım"),
    ],
    "name_joined": [
        ("#SaraYilmaz wartet.", "name", "#SaraYilmaz"),
        ("sara_yilmaz wartet.", "name", "sara_yilmaz"),
        ("SaraYilmaz wartet.", "name", "SaraYilmaz"),
        ("@sara.yilmaz wartet.", "name", "@sara.yilmaz"),
        ("Akte Sara_Yilmaz_2024 fehlt.", "name", "Sara_Yilmaz_2024"),
        ("#sarayilmaz wartet.", "name", "#sarayilmaz"),
        ("#OmidRahimiWartetSeitVierMonatenAufEinenKursplatz", "name",
         "#OmidRahimiWartetSeitVierMonatenAufEinenKursplatz"),
    ],
    "name_look_alike": [
        ("S\u0430ra Yilmaz wartet.", "name", "S\u0430ra Yilmaz"),  # Cyrillic а
        ("Omid Rah\u0456mi wartet.", "name", "Omid Rah\u0456mi"),  # Ukrainian і
    ],
    "name_spaced_letters": [
        ("S a r a Y i l m a z wartet.", "name", "S a r a Y i l m a z"),
        ("Akte o m i d r a h i m i fehlt.", "name", "o m i d r a h i m i"),
    ],
    "date_separators": [
        ("seit dem 14 02 2001 ohne Kurs", "date", "14 02 2001"),
        ("seit dem 14/02/2001 ohne Kurs", "date", "14/02/2001"),
        ("seit dem 14-02-2001 ohne Kurs", "date", "14-02-2001"),
        ("seit dem 2001/02/14 ohne Kurs", "date", "2001/02/14"),
        ("seit dem 14 . 02 . 2001 ohne Kurs", "date", "14 . 02 . 2001"),
        ("geb. 14/02/2015, ohne Kitaplatz", "birth_date", "14/02/2015"),
        ("seit dem 14.II.2001 ohne Kurs", "date", "14.II.2001"),
    ],
    "date_spaced_digits": [
        ("seit dem 1 4. 0 2. 2 0 0 1 ohne Kurs", "date", "1 4. 0 2. 2 0 0 1"),
        ("(geb. 1 9 8 5) wartet", "birth_date", "1 9 8 5"),
        ("(geb. 1 4 0 2 1 9 9 0) wartet", "birth_date", "1 4 0 2 1 9 9 0"),
        ("seit dem 1 4 0 2 1 9 9 0 ohne Kurs", "date", "1 4 0 2 1 9 9 0"),
    ],
    "date_full_width": [
        ("seit dem １４．０２．２００１ ohne Kurs", "date", "１４．０２．２００１"),
        ("seit dem ۱۴.۰۲.۲۰۰۱ ohne Kurs", "date", "۱۴.۰۲.۲۰۰۱"),
    ],
    "date_number_words": [
        ("am vierzehnter Februar zweitausendeins eingereist", "date",
         "vierzehnter Februar zweitausendeins"),
        ("geboren neunzehnhundertneunzig in Kabul", "birth_date", "neunzehnhundertneunzig"),
        ("am einunddreißigsten zwölften neunzehnhundertneunundneunzig", "date",
         "einunddreißigsten zwölften neunzehnhundertneunundneunzig"),
        ("Geburtsjahr zweitausendzwölf", "birth_date", "zweitausendzwölf"),
        ("geboren zwei tausend eins in Kabul", "birth_date", "zwei tausend eins"),
        ("geboren neunzehn hundert neun und neunzig", "birth_date",
         "neunzehn hundert neun und neunzig"),
    ],
    "phone_dots": [
        ("unter 0171.2345678 erreichbar", "phone", "0171.2345678"),
        ("unter 0171 . 234 56 78 erreichbar", "phone", "0171 . 234 56 78"),
    ],
    "phone_spaced_digits": [
        ("unter 0 1 7 1 2 3 4 5 6 7 8 erreichbar", "phone", "0 1 7 1 2 3 4 5 6 7 8"),
        ("unter 0171 234 56 78 erreichbar", "phone", "0171 234 56 78"),
    ],
    "phone_full_width": [
        ("unter ０１７１ ２３４５６７８ erreichbar", "phone", "０１７１ ２３４５６７８"),
        ("unter ＋４９ １７１ ２３４５６７８ erreichbar", "phone", "＋４９ １７１ ２３４５６７８"),
    ],
    "phone_without_plus": [
        ("unter 49 171 2345678 erreichbar", "phone", "49 171 2345678"),
        ("unter 491712345678 erreichbar", "phone", "491712345678"),
        ("unter 49 (0)171 2345678 erreichbar", "phone", "49 (0)171 2345678"),
    ],
    "phone_number_words": [
        ("unter null eins sieben eins zwei drei vier fünf sechs sieben acht erreichbar", "phone",
         "null eins sieben eins zwei drei vier fünf sechs sieben acht"),
        ("unter plus vier neun eins sieben eins zwei drei vier fünf sechs sieben acht", "phone",
         "plus vier neun eins sieben eins zwei drei vier fünf sechs sieben acht"),
        ("Tel. zwei drei vier fünf sechs (Unterkunft)", "phone", "zwei drei vier fünf sechs"),
    ],
    "email_words": [
        ("an sara at example dot de schreiben", "email", "sara at example dot de"),
        ("an sara ät example punkt de schreiben", "email", "sara ät example punkt de"),
        ("an SARA AT EXAMPLE DOT DE schreiben", "email", "SARA AT EXAMPLE DOT DE"),
        ("an sara punkt y at example punkt org schreiben", "email",
         "sara punkt y at example punkt org"),
    ],
    "email_brackets": [
        ("an sara (at) example (punkt) de schreiben", "email", "sara (at) example (punkt) de"),
        ("an sara [at] example [dot] de schreiben", "email", "sara [at] example [dot] de"),
        ("an sara(AT)example(DOT)de schreiben", "email", "sara(AT)example(DOT)de"),
        ("an sara {at} example {punkt} de schreiben", "email", "sara {at} example {punkt} de"),
    ],
    "email_full_width": [
        ("an sara＠example．de schreiben", "email", "sara＠example．de"),
    ],
    "address_joined": [
        ("wohnt in der Hauptstraße95 bei Bekannten", "address", "Hauptstraße95"),
        ("wohnt in der Lindenstr.14 bei Bekannten", "address", "Lindenstr.14"),
        ("wohnt in der Kölner Str.45 bei Bekannten", "address", "Kölner Str.45"),
        ("wohnt Am Ring3a bei Bekannten", "address", "Am Ring3a"),
        ("wohnt in der Hauptstr 95 bei Bekannten", "address", "Hauptstr 95"),
    ],
    "address_lower_case": [
        ("wohnt in der hauptstraße 95 bei Bekannten", "address", "hauptstraße 95"),
        ("wohnt in der lindenallee 3 bei Bekannten", "address", "lindenallee 3"),
    ],
    "address_spaced_digits": [
        ("wohnt in der Hauptstraße 9 5 bei Bekannten", "address", "Hauptstraße 9 5"),
        ("Post an 5 8 4 5 2 Wittmar", "address", "5 8 4 5 2 Wittmar"),
    ],
    "address_full_width": [
        ("wohnt in der Hauptstraße ９５ bei Bekannten", "address", "Hauptstraße ９５"),
    ],
    "file_number_spaced": [
        ("Az. 1 2 3 4 5 6 7 - 4 3 9 liegt vor", "file_number", "1 2 3 4 5 6 7 - 4 3 9"),
        ("Bescheid 1234567 - 439 liegt vor", "file_number", "1234567 - 439"),
        ("BG-Nr 362 02 BG 001 2345 fehlt", "file_number", "362 02 BG 001 2345"),
        ("Az. ４７１１/２０２３ liegt vor", "file_number", "４７１１/２０２３"),
    ],
    "iban_spacing": [
        ("an DE 12 3704 0044 0532 0130 00 überwiesen", "file_number",
         "DE 12 3704 0044 0532 0130 00"),
        ("an DE1237 0400 44053201 3000 überwiesen", "file_number", "DE1237 0400 44053201 3000"),
        ("an DE12 3704 00440532 013000 AB überwiesen", "file_number", "DE12 3704 00440532 013000"),
        ("IBAN: DE12370400440532013000", "file_number", "DE12370400440532013000"),
        ("an de12 3704 0044 0532 0130 00 überwiesen", "file_number", "de12 3704 0044 0532 0130 00"),
    ],
}


@pytest.mark.parametrize(("text", "kind", "excerpt"), [
    pytest.param(*case, id=f"{bypass}-{i}")
    for bypass, cases in BYPASSES.items() for i, case in enumerate(cases)
])
def test_bypass_is_caught(text, kind, excerpt):
    hits = scan(text, SARA)
    assert [(hit.kind, hit.excerpt) for hit in hits] == [(kind, excerpt)]
    _check_hits(text, hits)
    assert scan(redact(text, hits), SARA) == []


def test_every_bypass_class_is_in_the_corpus():
    in_corpus = {finding["bypass"] for finding in DIRTY if "bypass" in finding}
    assert in_corpus == set(BYPASSES)
    assert sum("bypass" in finding for finding in DIRTY) >= 30


@pytest.mark.parametrize("text", [
    "Nur 2 von 14 Familien warten zwischen 2019 und 2024, Kurs B1 ab 03/2025 in Raum 1.14.",
    "Version 2.0 der Lernplattform, Tel. der Beratungsstelle folgt.",
    "#Wohnraum, #Kita und @Integrationsagentur; #DeutschLernen.",
    "Sprechzeit 14.30 Uhr bis 16 . 00 Uhr, 8 - 12 Uhr, Quote 3 / 12 / 15.",
    "Im Q3 / 2025 und in der KW 12 / 2025 waren 0 von 24 Plätzen frei.",
    "Die ersten drei Monate, sechs bis acht Wochen, zum ersten Januar zweitausendfünfundzwanzig.",
    "Von zwölf Familien haben acht keinen Platz; Kinder von null bis drei Jahren.",
    "Die Module 1 2 3 sind voll, Anlage KdU 1 2 fehlt.",
    "Auf dem Marktplatz zwei Stände; in der Hauptstraße eine Beratungsstelle.",
    "Bei 49 Personen und 171 weiteren fehlt der Nachweis, Linie 49 fährt stündlich.",
    "Im Jahr 2008. 12 Familien kamen danach; 1 : 1 Betreuung fehlt.",
    "Am 3. 4. und am 12. 5. keine Termine, der Bescheid vom 1. 3. 2025 kam spät.",
    "Das Team at Jobcenter ist de facto am Punkt der Überlastung.",
    "Upload nur 5 MB 010 Dateien, die Dritten erhalten nichts, achten Sie auf Fristen.",
    "Wohnungen bis 50 m² kosten 9,50 €/m², zweitausend Euro Kaution.",
    "Familien mit drei und vier Kindern, sechs und mehr Personen, zwei oder drei Zimmer.",
    "Die Gruppen A B C und D, die Stufen I, II und III, Kapitel IV.2, Abschnitt 3.IV.",
    "Im Kapitel 12.XII werden die Fristen erklärt; 12345678 Euro Gesamtbudget.",
    "Die Wohnungsbaugesellschaft hat in der hauptstraße keine freien Wohnungen; die allee 3 Bäume.",
    "Die Gruppe ist klein, der raum ist 24 m² groß, 1 Tisch.",
])
def test_near_misses_of_the_normalising_rules(text):
    assert found(text, is_known_name=SARA) == []


def test_a_capitalised_word_is_no_iban_country():
    # "Es" opens a sentence; as "ES" it would be Spain's IBAN code.
    assert found("Es 010000 1000000 ist die Nummer der Unterkunft.") == [
        ("phone", "010000 1000000")]
    assert found("So 12 3456 7890 1234 Familien warten, Es 01 0000 1000000 0000.") == []


def test_registered_names_that_are_common_words_pass_in_lower_case_too():
    recorder = Recorder("Jonas Sommer", "Arben Lange", "Ayşe Nur", "Rosa Klein")
    text = ("im sommer fallen kurse aus. lange wartezeiten, nur 12 plätze. Die Familie lange "
            "warten zu lassen hilft nicht; der raum ist klein, die broschüre rosa.")
    assert found(text, is_known_name=recorder) == []
    # In a name-like position they are names: after a title, after a name in the same case.
    assert found("familie sommer wartet.", is_known_name=recorder) == [("name", "sommer")]
    assert found("jonas sommer wartet.", is_known_name=recorder) == [("name", "jonas sommer")]
    assert found("Jonas Sommer wartet.", is_known_name=recorder) == [("name", "Jonas Sommer")]
    assert found("Jonas lange nicht gesehen.", is_known_name=recorder) == [("name", "Jonas")]


def test_parts_of_joined_words_are_asked():
    recorder = Recorder()
    scan("#SaraYilmaz und sara_yilmaz und @omid.rahimi", recorder)
    assert {"sara", "yilmaz", "omid", "rahimi"} <= set(recorder.asked)
    assert all(token == normalise_name_token(token) for token in recorder.asked)


def test_hit_spans_point_at_the_original_characters_after_normalising():
    # Full-width, spaced, zero-width and spelled-out forms: each hit names exactly the original
    # characters, and removing them leaves a clean text.
    text = ("Ｓａｒａ wohnt in der Hauptstraße ９５, geb. 1 4. 0 2. 2 0 0 1, Tel. null eins sieben "
            "eins 2 3 4 5 6 7 8, Mail sara (at) example (punkt) de, Az. 1 2 3 4 5 6 7 - 4 3 9; "
            "Yo\u200bhannes am vierzehnten Februar neunzehnhundertneunzig.")
    hits = scan(text, is_known_name)
    assert [(h.kind, h.excerpt) for h in hits] == [
        ("name", "Ｓａｒａ"), ("address", "Hauptstraße ９５"), ("birth_date", "1 4. 0 2. 2 0 0 1"),
        ("phone", "null eins sieben eins 2 3 4 5 6 7 8"), ("email", "sara (at) example (punkt) de"),
        ("file_number", "1 2 3 4 5 6 7 - 4 3 9"), ("name", "Yo\u200bhannes"),
        ("date", "vierzehnten Februar neunzehnhundertneunzig"),
    ]
    _check_hits(text, hits)
    assert scan(redact(text, hits), is_known_name) == []


# --- properties of the normalising rules --------------------------------------------------------

_PAIRS = [(person["given_names"], person["family_name"]) for person in CORPUS["registered"]]


def _name_forms(given: str, family: str) -> list[str]:
    tokens = re.split(r"[\s\-]+", f"{given} {family}")
    camel = "".join(token[:1].upper() + token[1:] for token in tokens)
    return [
        f"{given} {family}".lower(), f"{given} {family}".upper(), f"#{camel}", camel,
        "_".join(tokens).lower(), "@" + ".".join(tokens).lower(), ".".join(tokens),
        f"{given.lower()} {family.lower()}s",
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CLEAN), st.integers(min_value=0, max_value=200),
       st.sampled_from(_PAIRS).flatmap(lambda pair: st.sampled_from(_name_forms(*pair))))
def test_a_registered_name_in_any_form_is_found(clean, where, name):
    text, start, end = _insert(clean, where, name)
    hits = scan(text, is_known_name, VOCABULARY)
    assert _covered(hits, "name", start, end), (text, hits)
    assert scan(redact(text, hits), is_known_name, VOCABULARY) == []


_UNITS = ["", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn",
          "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn",
          "neunzehn"]
_TENS = ["", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig",
         "neunzig"]
_MONTH_NAMES = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
                "September", "Oktober", "November", "Dezember"]


def _german(n: int) -> str:
    """1-99 and the years 1900-2099 in German words, written as one word."""
    if n >= 1900:
        century, rest = divmod(n, 100)
        head = "neunzehnhundert" if century == 19 else "zweitausend"
        return head + (_german(rest) if rest else "")
    if n < 20:
        return _UNITS[n]
    tens, unit = divmod(n, 10)
    return ("ein" if unit == 1 else _UNITS[unit]) + ("und" if unit else "") + _TENS[tens] \
        if unit else _TENS[tens]


def _ordinal(n: int, ending: str) -> str:
    special = {1: "erste", 3: "dritte", 7: "siebte", 8: "achte"}
    base = special.get(n) or (_german(n) + ("ste" if n >= 20 else "te"))
    return base[:-1] + ending  # ending: "e", "en", "er"


def _spaced(text: str) -> str:
    return re.sub(r"(?<=\d)(?=\d)", " ", text)


def _full_width(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


@st.composite
def dates_of_birth(draw) -> str:
    year = draw(st.integers(min_value=1940, max_value=2009))
    month = draw(st.integers(min_value=1, max_value=12))
    day = draw(st.integers(min_value=1, max_value=28))
    d, m, y = f"{day:02d}", f"{month:02d}", str(year)
    numeric = draw(st.sampled_from([
        f"{d}.{m}.{y}", f"{day}.{month}.{y}", f"{d}.{m}.{y[2:]}", f"{d} {m} {y}", f"{d}/{m}/{y}",
        f"{d}-{m}-{y}", f"{y}/{m}/{d}", f"{y}-{m}-{d}", f"{d} . {m} . {y}",
        f"{day}. {_MONTH_NAMES[month - 1]} {y}",
    ]))
    return draw(st.sampled_from([
        numeric, _spaced(numeric), _full_width(numeric),
        f"{_ordinal(day, 'en')} {_MONTH_NAMES[month - 1]} {_german(year)}",
        f"{_ordinal(day, 'er')} {_ordinal(month, 'er')} {_german(year)}",
    ]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CLEAN), st.integers(min_value=0, max_value=200), dates_of_birth(),
       st.sampled_from(["(geb. {})", "(geboren am {})", ", {},", "(eingereist am {})"]))
def test_a_date_of_birth_in_any_supported_form_is_found(clean, where, date, context):
    text, _, _ = _insert(clean, where, context.format(date))
    start = text.index(date)
    hits = scan(text, is_known_name, VOCABULARY)
    assert any(h.kind in ("birth_date", "date") and h.start <= start and start + len(date) <= h.end
               for h in hits), (text, hits)
    assert scan(redact(text, hits), is_known_name, VOCABULARY) == []


_DIGIT_WORDS = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]


@st.composite
def disguised_phones(draw) -> str:
    area = draw(st.from_regex(r"[1-9][0-9]{1,4}", fullmatch=True))
    subscriber_length = draw(st.integers(min_value=max(3, 8 - len(area)), max_value=13 - len(area)))
    subscriber = draw(st.from_regex(rf"[1-9][0-9]{{{subscriber_length - 1}}}", fullmatch=True))
    national = f"0{area}{subscriber}"
    return draw(st.sampled_from([
        f"0{area}.{subscriber}", f"0{area} . {subscriber}", _spaced(national),
        _full_width(f"0{area} {subscriber}"), _full_width(f"+49 {area} {subscriber}"),
        f"49 {area} {subscriber}", f"49{area}{subscriber}",
        " ".join(_DIGIT_WORDS[int(ch)] for ch in national),
        "plus vier neun " + " ".join(_DIGIT_WORDS[int(ch)] for ch in area + subscriber),
    ]))


@settings(max_examples=300, deadline=None)
@given(disguised_phones())
def test_disguised_phone_numbers_are_found(phone):
    assert found(f"Rückruf unter {phone} erbeten.") == [("phone", phone)]


@pytest.mark.parametrize("text", [
    "1 " * 2000, "null eins " * 400, "a at b dot " * 400, "Aa" * 2000, "#SaraYilmaz" * 364,
    "@a.b." * 800, "1 . " * 1000, "vierzehnter " * 364, "１４．" * 1333, "x (at) " * 571,
    "plus " * 800, "DE12 " * 800, "Hauptstraße" * 364, "\u200b1" * 2000, "a\u0308" * 2000,
    "sara yilmaz " * 333, "1 - " * 1000, "zweitausendeinhundertneunundneunzig" * 114,
    ("Frau Ahmadi, geb. 1 4. 0 2. 1 9 9 0, Tel. null eins sieben eins 2 3 4 5 6 7 8, a (at) b "
     "(punkt) de, Hauptstraße95, Az. 1 2 3 - 4, #SaraYilmaz, DE 12 3704 0044. ") * 25,
])
def test_an_adversarial_text_scans_in_time_linear_in_its_length(text):
    """No pattern backtracks catastrophically: four times the text costs about four times the
    CPU (measured side by side, best of three, so a busy machine does not decide), never the
    sixteen times of a quadratic scan or worse."""
    text = text[:4000]
    _check_hits(text, scan(text, lambda token: True, VOCABULARY))

    def cpu(sample: str) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            scan(sample, lambda token: True, VOCABULARY)
            best = min(best, time.process_time() - started)
        return best

    quarter, whole = cpu(text[:1000]), cpu(text)
    assert whole < 8 * max(quarter, 0.002), (quarter, whole)
