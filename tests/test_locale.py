"""Tests for squall.locale: CSV and gettext translations, plurals, dates, lists."""

from __future__ import annotations

import ast
import datetime
import logging
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall import locale

DATA = Path(__file__).parent / "data" / "locale"
UTC = datetime.timezone.utc


@pytest.fixture(autouse=True)
def isolated_locale_state() -> Iterator[None]:
    """Each test starts with no translations and en_US as the default."""
    names = ("_translations", "_supported_locales", "_use_gettext", "_default_locale")
    saved = {name: getattr(locale, name) for name in names}
    locale.Locale._cache = {}
    locale.set_default_locale("en_US")
    yield
    for name, value in saved.items():
        setattr(locale, name, value)
    locale.Locale._cache = {}


def parse_po(text: str) -> dict[str, str]:
    """Map each catalogue key to its value as a .mo file stores them."""
    entries: dict[str, str] = {}
    fields: dict[str, list[str]] = {}
    current = ""

    def finish() -> None:
        if "msgid" not in fields:
            return
        key = "".join(fields["msgid"])
        if "msgctxt" in fields:
            key = "".join(fields["msgctxt"]) + locale.CONTEXT_SEPARATOR + key
        if "msgid_plural" in fields:
            key += "\0" + "".join(fields["msgid_plural"])
            forms = sorted(f for f in fields if f.startswith("msgstr["))
            entries[key] = "\0".join("".join(fields[f]) for f in forms)
        else:
            entries[key] = "".join(fields["msgstr"])

    for line in text.splitlines() + [""]:
        line = line.strip()
        if not line:
            finish()
            fields = {}
        elif line.startswith('"'):
            fields[current].append(ast.literal_eval(line))
        elif not line.startswith("#"):
            current, literal = line.split(" ", 1)
            fields[current] = [ast.literal_eval(literal)]
    return entries


def write_mo(entries: dict[str, str], path: Path) -> None:
    """Write a GNU .mo catalogue (little-endian, no hash table)."""
    keys = sorted(entries)
    originals = [k.encode() for k in keys]
    translations = [entries[k].encode() for k in keys]
    header_size = 7 * 4
    tables_size = 2 * 8 * len(keys)
    offset = header_size + tables_size
    original_table, translation_table, blob = [], [], b""
    for data, table in [(d, original_table) for d in originals] + [
        (d, translation_table) for d in translations
    ]:
        table.append((len(data), offset + len(blob)))
        blob += data + b"\0"
    header = struct.pack(
        "<7I", 0x950412DE, 0, len(keys), header_size, header_size + 8 * len(keys), 0, 0
    )
    body = b"".join(struct.pack("<2I", *pair) for pair in original_table + translation_table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + body + blob)


@pytest.fixture
def gettext_dir(tmp_path: Path) -> Path:
    catalogue = parse_po((DATA / "gettext" / "squall_test.po").read_text(encoding="utf-8"))
    write_mo(catalogue, tmp_path / "fr_FR" / "LC_MESSAGES" / "squall_test.mo")
    (tmp_path / "README").write_text("not a locale")
    (tmp_path / ".hidden").mkdir()
    return tmp_path


# -- choosing a locale ----------------------------------------------------------

def test_default_locale_without_translations() -> None:
    assert locale.get_supported_locales() == frozenset({"en_US"})
    english = locale.get("fr_FR", "de")
    assert english.code == "en_US"
    assert isinstance(english, locale.CSVLocale)
    assert english.translate("school") == "school"
    assert locale.get() is english


def test_get_closest_normalises_and_falls_back() -> None:
    locale.load_translations(str(DATA / "csv"))
    assert locale.get_supported_locales() == frozenset({"en_US", "es_LA", "fr_FR"})
    assert locale.get("fr-fr").code == "fr_FR"
    assert locale.get("", "xx_YY_ZZ", "es_la").code == "es_LA"
    assert locale.get("de_DE").code == "en_US"
    locale.set_default_locale("fr_FR")
    assert locale.get("de_DE").code == "fr_FR"
    locale.set_default_locale("es")
    assert locale.get("es_MX").code == "es"


def test_get_unsupported_code_raises() -> None:
    with pytest.raises(ValueError, match="'de_DE'"):
        locale.Locale.get("de_DE")


def test_locale_names_and_direction() -> None:
    assert locale.LOCALE_NAMES["es_LA"]["name"] == "Espa\u00f1ol"
    assert locale.LOCALE_NAMES["es_LA"]["name_en"] == "Spanish"
    assert len(locale.LOCALE_NAMES) == 62
    assert all(set(v) == {"name", "name_en"} for v in locale.LOCALE_NAMES.values())
    assert locale.CSVLocale("fr_FR", {}).name == "Fran\u00e7ais"
    assert locale.CSVLocale("xx", {}).name == "Unknown"
    assert locale.CSVLocale("he_IL", {}).rtl
    assert locale.CSVLocale("ar_AR", {}).rtl
    assert not locale.CSVLocale("en_US", {}).rtl


# -- CSV ------------------------------------------------------------------------

def test_csv_translations_and_plurals() -> None:
    locale.load_translations(str(DATA / "csv"))
    fr = locale.get("fr_FR")
    assert isinstance(fr, locale.CSVLocale)
    assert fr.translate("school") == "\u00e9cole"
    assert fr.translate("untranslated") == "untranslated"
    assert fr.translate("%(count)d star", "%(count)d stars", 1) % {"count": 1} == "1 \u00e9toile"
    assert fr.translate("%(count)d star", "%(count)d stars", 3) % {"count": 3} == "3 \u00e9toiles"
    assert fr.translate("x", "xs", 2) == "xs"
    with pytest.raises(ValueError, match="needs a count"):
        fr.translate("x", "xs")
    assert fr.list(["a", "b", "c"]) == "a, b et c"
    assert locale.get("es_LA").translate("school") == "escuela"


def test_csv_pgettext_ignores_context(caplog: pytest.LogCaptureFixture) -> None:
    locale.load_translations(str(DATA / "csv"))
    with caplog.at_level(logging.WARNING, logger="squall.general"):
        assert locale.get("fr_FR").pgettext("ctx", "school") == "\u00e9cole"
    assert "pgettext is not supported by CSVLocale" in caplog.text


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1"])
def test_csv_encodings(tmp_path: Path, encoding: str) -> None:
    text = '"school","\u00e9cole"\n'
    (tmp_path / "fr_FR.csv").write_bytes(text.encode(encoding))
    explicit = encoding if encoding in ("utf-16-le", "latin-1") else None
    locale.load_translations(str(tmp_path), encoding=explicit)
    assert locale.get("fr_FR").translate("school") == "\u00e9cole"


def test_csv_bad_names_and_rows_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "French.csv").write_text('"a","b"\n')
    (tmp_path / "fr_FR.csv").write_text('"a","b","dual"\n"c","d",""\n')
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.ERROR, logger="squall.general"):
        locale.load_translations(str(tmp_path))
    assert "Unrecognized locale 'French'" in caplog.text
    assert "Unrecognized plural indicator 'dual'" in caplog.text
    assert locale.get_supported_locales() == frozenset({"en_US", "fr_FR"})
    fr = locale.get("fr_FR")
    assert fr.translate("a") == "a"
    assert fr.translate("c") == "d"


def test_reloading_replaces_cached_locales(tmp_path: Path) -> None:
    (tmp_path / "fr_FR.csv").write_text('"school","old"\n')
    locale.load_translations(str(tmp_path))
    assert locale.get("fr_FR").translate("school") == "old"
    (tmp_path / "fr_FR.csv").write_text('"school","new"\n')
    locale.load_translations(str(tmp_path))
    assert locale.get("fr_FR").translate("school") == "new"


# -- gettext --------------------------------------------------------------------

def test_gettext_translations(gettext_dir: Path) -> None:
    locale.load_gettext_translations(str(gettext_dir), "squall_test")
    assert locale.get_supported_locales() == frozenset({"en_US", "fr_FR"})
    fr = locale.get("fr_FR")
    assert isinstance(fr, locale.GettextLocale)
    assert fr.translate("school") == "\u00e9cole"
    assert fr.translate("club", "clubs", 1) == "un club"
    assert fr.translate("club", "clubs", 0) == "un club"  # French: 0 is singular
    assert fr.translate("club", "clubs", 2) == "des clubs"
    assert fr._months[3] == "avril"
    assert locale.get("en_US").translate("school") == "school"


def test_gettext_pgettext(gettext_dir: Path) -> None:
    locale.load_gettext_translations(str(gettext_dir), "squall_test")
    fr = locale.get("fr_FR")
    assert fr.pgettext("law", "right") == "le droit"
    assert fr.pgettext("good", "right") == "le bien"
    # No translation in this context: the context-free one is used.
    assert fr.pgettext("direction", "right") == "droite"
    assert fr.pgettext("nowhere", "left") == "left"
    assert fr.pgettext("organization", "club", "clubs", 1) == "le club"
    assert fr.pgettext("organization", "club", "clubs", 2) == "les clubs"
    assert fr.pgettext("stick", "club", "clubs", 2) == "des clubs"
    assert fr.pgettext("stick", "bat", "bats", 2) == "bats"
    with pytest.raises(ValueError, match="needs a count"):
        fr.pgettext("stick", "bat", "bats")


def test_gettext_unreadable_catalogue_is_logged(
    gettext_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = gettext_dir / "de_DE" / "LC_MESSAGES" / "squall_test.mo"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a catalogue")
    (gettext_dir / "es_ES").mkdir()
    with caplog.at_level(logging.ERROR, logger="squall.general"):
        locale.load_gettext_translations(str(gettext_dir), "squall_test")
    assert "Cannot load translation for 'de_DE'" in caplog.text
    assert "Cannot load translation for 'es_ES'" in caplog.text
    assert locale.get_supported_locales() == frozenset({"en_US", "fr_FR"})


# -- formatting -----------------------------------------------------------------

def test_format_date_full() -> None:
    en = locale.get("en_US")
    date = datetime.datetime(2013, 4, 28, 18, 35)
    assert en.format_date(date, full_format=True) == "April 28, 2013 at 6:35 pm"
    assert en.format_date(date, full_format=True, shorter=True) == "April 28, 2013"
    assert en.format_date(date, gmt_offset=19 * 60, full_format=True) == (
        "April 27, 2013 at 11:35 pm"
    )
    assert en.format_date(datetime.datetime(2013, 4, 28, 0, 5), full_format=True).endswith(
        "12:05 am"
    )
    aware = datetime.datetime(2013, 4, 28, 20, 35, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert en.format_date(aware, full_format=True) == "April 28, 2013 at 6:35 pm"
    assert en.format_date(date.replace(tzinfo=UTC).timestamp(), full_format=True) == (
        "April 28, 2013 at 6:35 pm"
    )
    assert locale.CSVLocale("de_DE", {}).format_date(date, full_format=True) == (
        "April 28, 2013 at 18:35"
    )
    assert locale.CSVLocale("zh_CN", {}).format_date(date, full_format=True) == (
        "April 28, 2013 at \u4e0b\u53486:35"
    )


@pytest.mark.parametrize("naive", [False, True])
def test_format_date_relative(naive: bool) -> None:
    en = locale.get("en_US")
    now = datetime.datetime.now(UTC)
    if naive:
        now = now.replace(tzinfo=None)
    ago = lambda **kw: now - datetime.timedelta(**kw)  # noqa: E731

    # Exact second counts would depend on how fast this line runs.
    seconds = en.format_date(ago(seconds=10))
    assert re.fullmatch(r"(\d+) seconds ago", seconds)
    assert 10 <= int(seconds.split()[0]) < 50
    assert en.format_date(ago(minutes=1)) == "1 minute ago"
    assert en.format_date(ago(minutes=2)) == "2 minutes ago"
    assert en.format_date(ago(hours=1)) == "1 hour ago"
    assert en.format_date(ago(hours=2)) == "2 hours ago"
    assert en.format_date(ago(days=1), shorter=True) == "yesterday"
    assert en.format_date(ago(days=1)).startswith("yesterday at ")
    date = ago(days=2)
    assert en.format_date(date, shorter=True) == en._weekdays[date.weekday()]
    date = ago(days=300)
    assert en.format_date(date, shorter=True) == f"{en._months[date.month - 1]} {date.day}"
    date = ago(days=500)
    assert en.format_date(date, shorter=True) == (
        f"{en._months[date.month - 1]} {date.day}, {date.year}"
    )
    # The near future is clock skew; the far future gets the full date.
    assert en.format_date(now + datetime.timedelta(seconds=10)).endswith(" seconds ago")
    date = now + datetime.timedelta(days=1, seconds=30)
    assert en.format_date(date, shorter=True) == (
        f"{en._months[date.month - 1]} {date.day}, {date.year}"
    )


def test_format_date_translated() -> None:
    locale.load_translations(str(DATA / "csv"))
    fr = locale.get("fr_FR")
    date = datetime.datetime(2013, 4, 28, 18, 35)
    assert fr.format_date(date, full_format=True) == "28 avril 2013 \u00e0 18:35"
    assert fr.format_day(date) == "dimanche 28 avril"


def test_format_day() -> None:
    en = locale.get("en_US")
    date = datetime.datetime(2013, 4, 28, 18, 35)
    assert en.format_day(date=date, dow=True) == "Sunday, April 28"
    assert en.format_day(date=date, dow=False) == "April 28"
    assert en.format_day(date, gmt_offset=19 * 60) == "Saturday, April 27"


def test_list() -> None:
    en = locale.get("en_US")
    assert en.list([]) == ""
    assert en.list(["A"]) == "A"
    assert en.list(["A", "B"]) == "A and B"
    assert en.list(["A", "B", "C"]) == "A, B and C"
    assert locale.CSVLocale("fa_IR", {}).list(["A", "B", "C"]) == "A \u0648 B and C"


def test_friendly_number() -> None:
    en = locale.get("en_US")
    assert en.friendly_number(1000000) == "1,000,000"
    assert en.friendly_number(999) == "999"
    assert en.friendly_number(-1234) == "-1,234"
    assert en.friendly_number(-123) == "-123"
    assert locale.CSVLocale("de_DE", {}).friendly_number(1000000) == "1000000"


def test_base_locale_methods_are_abstract() -> None:
    with pytest.raises(NotImplementedError):
        locale.Locale("en_US")


def test_closest_locale_answers_follow_direct_state_changes(tmp_path: Path) -> None:
    # get() remembers its answers; replacing the module's state directly
    # (as Tornado's own tests do) must not leave a stale answer behind.
    assert locale.get("fr_FR").code == "en_US"
    (tmp_path / "fr_FR.csv").write_text('"school","ecole"\n')
    locale.load_translations(str(tmp_path))
    french = locale.get("fr_FR")
    assert french.code == "fr_FR" and locale.get("fr_FR") is french
    locale._supported_locales = frozenset({"en_US"})
    assert locale.get("fr_FR").code == "en_US"
    locale._supported_locales = frozenset({"en_US", "fr_FR"})
    locale.Locale._cache = {}
    again = locale.get("fr_FR")
    assert again.code == "fr_FR" and again is not french
