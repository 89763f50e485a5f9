"""Translations and locale-aware formatting of dates, lists and numbers.

Load translations once at startup, from CSV files with
:func:`load_translations` or from gettext catalogues with
:func:`load_gettext_translations`, then pick a :class:`Locale` per request
with :func:`get` (the web framework does this from the user's
``Accept-Language`` header) and translate through it::

    user_locale = squall.locale.get("es_LA")
    print(user_locale.translate("Sign out"))

Plural forms take the plural message and a count::

    user_locale.translate("%(count)d star", "%(count)d stars", len(stars)) % {
        "count": len(stars)
    }

Until translations are loaded every code maps to the default locale,
``en_US`` unless :func:`set_default_locale` says otherwise, whose
translations are the identity.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import gettext
import os
import re
from typing import Any

from squall import escape
from squall.log import gen_log

__all__ = [
    "CONTEXT_SEPARATOR",
    "CSVLocale",
    "GettextLocale",
    "LOCALE_NAMES",
    "Locale",
    "get",
    "get_supported_locales",
    "load_gettext_translations",
    "load_translations",
    "set_default_locale",
]

# The separator gettext's msgctxt support puts between context and message
# in a compiled catalogue (GNU gettext's "\004").
CONTEXT_SEPARATOR = "\x04"

_default_locale = "en_US"
_translations: dict[str, Any] = {}
_supported_locales: frozenset[str] = frozenset([_default_locale])
_use_gettext = False

# A locale file or directory name: language, then an optional region.
_LOCALE_CODE_RE = re.compile(r"[a-z]+(_[A-Z]+)?\Z")

_CSV_PLURAL_KINDS = ("plural", "singular", "unknown")

# Codes whose scripts are written right to left.
_RTL_PREFIXES = ("fa", "ar", "he")

_ENGLISH_CODES = ("en", "en_US")

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Relative dates, at Tornado's thresholds: from these ages on "N seconds ago"
# turns to minutes and minutes to hours; a date under 5 days old shows its
# weekday, an older one its month and day, and from 334 days (11 months, so
# that "April 28" cannot mean last year's) its year too.
_SECONDS_UNTIL_MINUTES = 50
_SECONDS_UNTIL_HOURS = 50 * 60
_DAYS_UNTIL_DATE = 5
_DAYS_UNTIL_YEAR = 334
# A date this close in the future is taken as "now" (clock skew between
# the machine that stored it and this one).
_FUTURE_SKEW = datetime.timedelta(seconds=60)


# Answers of Locale.get_closest by requested codes. The codes come from
# request headers, so the cache is bounded (as squall.httputil's caches of
# header names are).
_CLOSEST_CACHE_SIZE = 1000
_closest_cache: dict[tuple[str, ...], tuple[frozenset[str], str, "Locale"]] = {}


def get(*locale_codes: str) -> Locale:
    """Return the closest supported locale to the given codes, in preference order.

    Codes may use ``_`` or ``-`` and any case (``"en-us"``); a code whose
    region is not supported falls back to its language (``"es_MX"`` to
    ``"es"``) and, when nothing matches, to the default locale.
    """
    return Locale.get_closest(*locale_codes)


def set_default_locale(code: str) -> None:
    """Make ``code`` the locale used when no requested locale is supported.

    The default locale's strings are the ones in the source code, so it is
    always supported, with or without a translation file.
    """
    global _default_locale, _supported_locales
    _default_locale = code
    _supported_locales = frozenset([*_translations, _default_locale])


def get_supported_locales() -> frozenset[str]:
    """The codes of every loaded translation plus the default locale."""
    return _supported_locales


def _detect_encoding(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(len(codecs.BOM_UTF16_LE))
    if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return "utf-16"
    # utf-8-sig reads plain UTF-8 too, and drops a UTF-8 BOM when present.
    return "utf-8-sig"


def load_translations(directory: str, encoding: str | None = None) -> None:
    """Load CSV translation files (one per locale) from ``directory``.

    Each file is named after its locale (``es_GT.csv``) and holds rows of
    ``"english string","translated string"`` with an optional third column,
    ``plural``, ``singular`` or empty, for strings that have plural forms.
    A plural row is keyed by the English plural message::

        "I love you","Te amo"
        "%(count)d star","%(count)d estrella","singular"
        "%(count)d stars","%(count)d estrellas","plural"

    Strings may contain ``%(name)s`` placeholders for the caller to fill.
    Without ``encoding``, a file starting with a UTF-16 byte order mark is
    read as UTF-16 and any other as UTF-8 (a UTF-8 BOM is skipped).
    Malformed file names and rows are logged and skipped. Loading replaces
    any gettext translations loaded before.
    """
    global _translations, _supported_locales, _use_gettext
    translations: dict[str, dict[str, dict[str, str]]] = {}
    for filename in sorted(os.listdir(directory)):
        if not filename.endswith(".csv"):
            continue
        code = filename[: -len(".csv")]
        path = os.path.join(directory, filename)
        if not _LOCALE_CODE_RE.match(code):
            gen_log.error("Unrecognized locale %r (path: %s)", code, path)
            continue
        file_encoding = encoding or _detect_encoding(path)
        table: dict[str, dict[str, str]] = {}
        with open(path, encoding=file_encoding, newline="") as f:
            for line_number, row in enumerate(csv.reader(f), 1):
                cells = [escape.to_unicode(cell).strip() for cell in row]
                if len(cells) < 2:
                    continue
                english, translation = cells[0], cells[1]
                kind = (cells[2] if len(cells) > 2 else "") or "unknown"
                if kind not in _CSV_PLURAL_KINDS:
                    gen_log.error(
                        "Unrecognized plural indicator %r in %s line %d", kind, path, line_number
                    )
                    continue
                table.setdefault(kind, {})[english] = translation
        translations[code] = table
    _translations = translations
    _supported_locales = frozenset([*_translations, _default_locale])
    _use_gettext = False
    Locale._cache = {}
    gen_log.debug("Supported locales: %s", sorted(_supported_locales))


def load_gettext_translations(directory: str, domain: str) -> None:
    """Load gettext catalogues from ``directory``.

    The layout is gettext's: ``{directory}/{locale}/LC_MESSAGES/{domain}.mo``,
    e.g. ``translations/es_GT/LC_MESSAGES/mydomain.mo``. Compile ``.po``
    files to ``.mo`` with ``msgfmt``. Locales whose catalogue cannot be read
    are logged and skipped. Loading replaces any CSV translations loaded
    before.
    """
    global _translations, _supported_locales, _use_gettext
    translations: dict[str, gettext.NullTranslations] = {}
    for code in sorted(os.listdir(directory)):
        if code.startswith(".") or os.path.isfile(os.path.join(directory, code)):
            continue
        try:
            os.stat(os.path.join(directory, code, "LC_MESSAGES", domain + ".mo"))
            translations[code] = gettext.translation(domain, directory, languages=[code])
        except Exception as e:
            gen_log.error("Cannot load translation for '%s': %s", code, str(e))
    _translations = translations
    _supported_locales = frozenset([*_translations, _default_locale])
    _use_gettext = True
    Locale._cache = {}
    gen_log.debug("Supported locales: %s", sorted(_supported_locales))


def _as_utc(value: int | float | datetime.datetime) -> datetime.datetime:
    """An aware UTC datetime for a timestamp, or a datetime (naive means UTC)."""
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc)


class Locale:
    """A locale: translations plus date, list and number formatting.

    Get instances with :func:`get` or :meth:`Locale.get`, which cache them.
    ``code`` is the locale code, ``name`` its name in its own language
    (from :data:`LOCALE_NAMES`, ``"Unknown"`` if absent) and ``rtl`` whether
    its script runs right to left.
    """

    _cache: dict[str, Locale] = {}

    @classmethod
    def get_closest(cls, *locale_codes: str) -> Locale:
        """Return the closest supported locale to the given codes (see :func:`get`)."""
        # Every request without a user locale asks this (for the same few
        # Accept-Language values): an answer is reused while the supported
        # set, the default and the cached Locale are still the ones it came
        # from (code, even tests, may replace any of them directly).
        hit = _closest_cache.get(locale_codes)
        if (
            hit is not None
            and hit[0] is _supported_locales
            and hit[1] == _default_locale
            and cls._cache.get(hit[2].code) is hit[2]
        ):
            return hit[2]
        found = cls._find_closest(locale_codes)
        if len(_closest_cache) < _CLOSEST_CACHE_SIZE or hit is not None:
            _closest_cache[locale_codes] = (_supported_locales, _default_locale, found)
        return found

    @classmethod
    def _find_closest(cls, locale_codes: tuple[str, ...]) -> Locale:
        for code in locale_codes:
            if not code:
                continue
            parts = code.replace("-", "_").split("_")
            if len(parts) > 2:
                continue
            language = parts[0].lower()
            if len(parts) == 2:
                full = f"{language}_{parts[1].upper()}"
                if full in _supported_locales:
                    return cls.get(full)
            if language in _supported_locales:
                return cls.get(language)
        return cls.get(_default_locale)

    @classmethod
    def get(cls, code: str) -> Locale:
        """Return the locale for ``code``, which must be a supported code."""
        locale = cls._cache.get(code)
        if locale is None:
            if code not in _supported_locales:
                raise ValueError(
                    f"unsupported locale {code!r}; supported: {sorted(_supported_locales)}"
                )
            translations = _translations.get(code)
            if translations is None:
                locale = CSVLocale(code, {})
            elif _use_gettext:
                locale = GettextLocale(code, translations)
            else:
                locale = CSVLocale(code, translations)
            cls._cache[code] = locale
        return locale

    def __init__(self, code: str) -> None:
        self.code = code
        self.name: str = LOCALE_NAMES.get(code, {}).get("name", "Unknown")
        self.rtl = code.startswith(_RTL_PREFIXES)
        # Translated once here: formatting dates needs them on every call.
        self._months = [self.translate(month) for month in _MONTHS]
        self._weekdays = [self.translate(day) for day in _WEEKDAYS]

    def translate(
        self, message: str, plural_message: str | None = None, count: int | None = None
    ) -> str:
        """Return the translation of ``message``.

        With ``plural_message`` and ``count``, return the translation of
        ``message`` when ``count`` is 1 and of ``plural_message`` otherwise
        (or the form the language's plural rules pick, with gettext).
        Untranslated strings come back unchanged.
        """
        raise NotImplementedError()

    def pgettext(
        self,
        context: str,
        message: str,
        plural_message: str | None = None,
        count: int | None = None,
    ) -> str:
        """Like :meth:`translate`, for ``message`` as used in ``context``.

        Context tells apart identical English strings that translate
        differently: ``pgettext("law", "right")`` versus
        ``pgettext("good", "right")``.
        """
        raise NotImplementedError()

    def format_date(
        self,
        date: int | float | datetime.datetime,
        gmt_offset: int = 0,
        relative: bool = True,
        shorter: bool = False,
        full_format: bool = False,
    ) -> str:
        """Format ``date`` (a datetime, naive meaning UTC, or a POSIX timestamp).

        Recent past dates read relative to now ("2 minutes ago",
        "yesterday at 5:32 pm", "Monday"), older ones as "April 28" or, from
        about a year back or for future dates, "April 28, 2013", each
        followed by " at <time>" unless ``shorter``. ``relative=False``
        turns off "N ago" and "yesterday"; ``full_format=True`` always gives
        the full date and time. ``gmt_offset`` is the user's offset from UTC
        in minutes (positive west of Greenwich, as JavaScript's
        ``getTimezoneOffset``).
        """
        when = _as_utc(date)
        now = datetime.datetime.now(datetime.timezone.utc)
        if when > now:
            if relative and when - now < _FUTURE_SKEW:
                when = now
            else:
                full_format = True
        offset = datetime.timedelta(minutes=gmt_offset)
        local_when = when - offset
        local_now = now - offset
        age = now - when
        days, seconds = age.days, age.seconds
        _ = self.translate

        if full_format:
            pattern = None
        elif days == 0 and relative:
            if seconds < _SECONDS_UNTIL_MINUTES:
                return _("1 second ago", "%(seconds)d seconds ago", seconds) % {
                    "seconds": seconds
                }
            if seconds < _SECONDS_UNTIL_HOURS:
                minutes = round(seconds / 60.0)
                return _("1 minute ago", "%(minutes)d minutes ago", minutes) % {
                    "minutes": minutes
                }
            hours = round(seconds / 3600.0)
            return _("1 hour ago", "%(hours)d hours ago", hours) % {"hours": hours}
        elif days == 0:
            pattern = _("%(time)s")
        elif (
            days == 1
            and relative
            and local_when.day == (local_now - datetime.timedelta(days=1)).day
        ):
            pattern = _("yesterday") if shorter else _("yesterday at %(time)s")
        elif days < _DAYS_UNTIL_DATE:
            pattern = _("%(weekday)s") if shorter else _("%(weekday)s at %(time)s")
        elif days < _DAYS_UNTIL_YEAR:
            pattern = (
                _("%(month_name)s %(day)s")
                if shorter
                else _("%(month_name)s %(day)s at %(time)s")
            )
        else:
            pattern = None
        if pattern is None:
            pattern = (
                _("%(month_name)s %(day)s, %(year)s")
                if shorter
                else _("%(month_name)s %(day)s, %(year)s at %(time)s")
            )
        return pattern % {
            "month_name": self._months[local_when.month - 1],
            "weekday": self._weekdays[local_when.weekday()],
            "day": str(local_when.day),
            "year": str(local_when.year),
            "time": self._format_time(local_when),
        }

    def _format_time(self, when: datetime.datetime) -> str:
        twelve_hour = when.hour % 12 or 12
        if self.code in _ENGLISH_CODES:
            return "%d:%02d %s" % (twelve_hour, when.minute, "pm" if when.hour >= 12 else "am")
        if self.code == "zh_CN":
            # 上午 (morning) / 下午 (afternoon) before a 12-hour time.
            half = "\u4e0b\u5348" if when.hour >= 12 else "\u4e0a\u5348"
            return "%s%d:%02d" % (half, twelve_hour, when.minute)
        return "%d:%02d" % (when.hour, when.minute)

    def format_day(
        self, date: datetime.datetime, gmt_offset: int = 0, dow: bool = True
    ) -> str:
        """Format the day of ``date``: "Monday, January 22", or "January 22" without ``dow``.

        ``gmt_offset`` is as in :meth:`format_date`.
        """
        local = date - datetime.timedelta(minutes=gmt_offset)
        _ = self.translate
        pattern = _("%(weekday)s, %(month_name)s %(day)s") if dow else _("%(month_name)s %(day)s")
        return pattern % {
            "month_name": self._months[local.month - 1],
            "weekday": self._weekdays[local.weekday()],
            "day": str(local.day),
        }

    def list(self, parts: Any) -> str:
        """Join ``parts`` as a human list: "A, B and C" in English.

        An empty list gives ``""`` and one item gives itself.
        """
        _ = self.translate
        if len(parts) == 0:
            return ""
        if len(parts) == 1:
            return parts[0]  # type: ignore[no-any-return]
        # Persian joins with "و" (and) rather than a comma.
        comma = " \u0648 " if self.code.startswith("fa") else ", "
        return _("%(commas)s and %(last)s") % {
            "commas": comma.join(parts[:-1]),
            "last": parts[-1],
        }

    def friendly_number(self, value: int) -> str:
        """Format ``value`` with thousands separators in English ("1,000,000").

        Other locales get ``str(value)``.
        """
        if self.code not in _ENGLISH_CODES or not isinstance(value, (int, float)):
            return str(value)
        return f"{value:,}"


class CSVLocale(Locale):
    """A locale whose translations come from a CSV file (see :func:`load_translations`).

    ``translations`` maps ``"plural"``, ``"singular"`` and ``"unknown"`` to
    dicts from English to translated strings.
    """

    def __init__(self, code: str, translations: dict[str, dict[str, str]]) -> None:
        self.translations = translations
        super().__init__(code)

    def translate(
        self, message: str, plural_message: str | None = None, count: int | None = None
    ) -> str:
        if plural_message is None:
            table = self.translations.get("unknown", {})
        else:
            if count is None:
                raise ValueError(f"translating {message!r} with a plural form needs a count")
            if count != 1:
                message = plural_message
                table = self.translations.get("plural", {})
            else:
                table = self.translations.get("singular", {})
        return table.get(message, message)

    def pgettext(
        self,
        context: str,
        message: str,
        plural_message: str | None = None,
        count: int | None = None,
    ) -> str:
        """Translate ignoring ``context``: CSV files have no place for it."""
        if self.translations:
            gen_log.warning("pgettext is not supported by CSVLocale")
        return self.translate(message, plural_message, count)


class GettextLocale(Locale):
    """A locale whose translations come from a gettext catalogue.

    ``translations`` is a :class:`gettext.NullTranslations` (usually a
    ``GNUTranslations``); its plural rules choose plural forms.
    """

    def __init__(self, code: str, translations: gettext.NullTranslations) -> None:
        self.ngettext = translations.ngettext
        self.gettext = translations.gettext
        # Set before Locale.__init__, which translates month and day names.
        super().__init__(code)

    def translate(
        self, message: str, plural_message: str | None = None, count: int | None = None
    ) -> str:
        if plural_message is None:
            return self.gettext(message)
        if count is None:
            raise ValueError(f"translating {message!r} with a plural form needs a count")
        return self.ngettext(message, plural_message, count)

    def pgettext(
        self,
        context: str,
        message: str,
        plural_message: str | None = None,
        count: int | None = None,
    ) -> str:
        """Translate ``message`` in ``context`` (gettext's ``msgctxt``).

        Without a translation for that context, the context-free translation
        of the message is used.
        """
        prefix = context + CONTEXT_SEPARATOR
        if plural_message is None:
            result = self.gettext(prefix + message)
            if CONTEXT_SEPARATOR in result:
                return self.gettext(message)
            return result
        if count is None:
            raise ValueError(f"translating {message!r} with a plural form needs a count")
        result = self.ngettext(prefix + message, prefix + plural_message, count)
        if CONTEXT_SEPARATOR in result:
            return self.ngettext(message, plural_message, count)
        return result


# Every locale code with its name in its own language and in English. The
# names are the languages' usual self-designations; "es_LA" is Latin American
# Spanish and "ar_AR" Arabic without a country.
_LANGUAGES: dict[str, tuple[str, str]] = {
    "af_ZA": ("Afrikaans", "Afrikaans"),
    "am_ET": ("\u12a0\u121b\u122d\u129b", "Amharic"),
    "ar_AR": ("\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "Arabic"),
    "bg_BG": ("\u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438", "Bulgarian"),
    "bn_IN": ("\u09ac\u09be\u0982\u09b2\u09be", "Bengali"),
    "bs_BA": ("Bosanski", "Bosnian"),
    "ca_ES": ("Catal\u00e0", "Catalan"),
    "cs_CZ": ("\u010ce\u0161tina", "Czech"),
    "cy_GB": ("Cymraeg", "Welsh"),
    "da_DK": ("Dansk", "Danish"),
    "de_DE": ("Deutsch", "German"),
    "el_GR": ("\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac", "Greek"),
    "en_GB": ("English (UK)", "English (UK)"),
    "en_US": ("English (US)", "English (US)"),
    "es_ES": ("Espa\u00f1ol (Espa\u00f1a)", "Spanish (Spain)"),
    "es_LA": ("Espa\u00f1ol", "Spanish"),
    "et_EE": ("Eesti", "Estonian"),
    "eu_ES": ("Euskara", "Basque"),
    "fa_IR": ("\u0641\u0627\u0631\u0633\u06cc", "Persian"),
    "fi_FI": ("Suomi", "Finnish"),
    "fr_CA": ("Fran\u00e7ais (Canada)", "French (Canada)"),
    "fr_FR": ("Fran\u00e7ais", "French"),
    "ga_IE": ("Gaeilge", "Irish"),
    "gl_ES": ("Galego", "Galician"),
    "he_IL": ("\u05e2\u05d1\u05e8\u05d9\u05ea", "Hebrew"),
    "hi_IN": ("\u0939\u093f\u0928\u094d\u0926\u0940", "Hindi"),
    "hr_HR": ("Hrvatski", "Croatian"),
    "hu_HU": ("Magyar", "Hungarian"),
    "id_ID": ("Bahasa Indonesia", "Indonesian"),
    "is_IS": ("\u00cdslenska", "Icelandic"),
    "it_IT": ("Italiano", "Italian"),
    "ja_JP": ("\u65e5\u672c\u8a9e", "Japanese"),
    "ko_KR": ("\ud55c\uad6d\uc5b4", "Korean"),
    "lt_LT": ("Lietuvi\u0173", "Lithuanian"),
    "lv_LV": ("Latvie\u0161u", "Latvian"),
    "mk_MK": ("\u041c\u0430\u043a\u0435\u0434\u043e\u043d\u0441\u043a\u0438", "Macedonian"),
    "ml_IN": ("\u0d2e\u0d32\u0d2f\u0d3e\u0d33\u0d02", "Malayalam"),
    "ms_MY": ("Bahasa Melayu", "Malay"),
    "nb_NO": ("Norsk (bokm\u00e5l)", "Norwegian (bokmal)"),
    "nl_NL": ("Nederlands", "Dutch"),
    "nn_NO": ("Norsk (nynorsk)", "Norwegian (nynorsk)"),
    "pa_IN": ("\u0a2a\u0a70\u0a1c\u0a3e\u0a2c\u0a40", "Punjabi"),
    "pl_PL": ("Polski", "Polish"),
    "pt_BR": ("Portugu\u00eas (Brasil)", "Portuguese (Brazil)"),
    "pt_PT": ("Portugu\u00eas (Portugal)", "Portuguese (Portugal)"),
    "ro_RO": ("Rom\u00e2n\u0103", "Romanian"),
    "ru_RU": ("\u0420\u0443\u0441\u0441\u043a\u0438\u0439", "Russian"),
    "sk_SK": ("Sloven\u010dina", "Slovak"),
    "sl_SI": ("Sloven\u0161\u010dina", "Slovenian"),
    "sq_AL": ("Shqip", "Albanian"),
    "sr_RS": ("\u0421\u0440\u043f\u0441\u043a\u0438", "Serbian"),
    "sv_SE": ("Svenska", "Swedish"),
    "sw_KE": ("Kiswahili", "Swahili"),
    "ta_IN": ("\u0ba4\u0bae\u0bbf\u0bb4\u0bcd", "Tamil"),
    "te_IN": ("\u0c24\u0c46\u0c32\u0c41\u0c17\u0c41", "Telugu"),
    "th_TH": ("\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22", "Thai"),
    "tl_PH": ("Filipino", "Filipino"),
    "tr_TR": ("T\u00fcrk\u00e7e", "Turkish"),
    "uk_UA": ("\u0423\u043a\u0440\u0430\u0457\u043d\u0441\u044c\u043a\u0430", "Ukrainian"),
    "vi_VN": ("Ti\u1ebfng Vi\u1ec7t", "Vietnamese"),
    "zh_CN": ("\u4e2d\u6587(\u7b80\u4f53)", "Chinese (Simplified)"),
    "zh_TW": ("\u4e2d\u6587(\u7e41\u9ad4)", "Chinese (Traditional)"),
}

LOCALE_NAMES: dict[str, dict[str, str]] = {
    code: {"name": native, "name_en": english} for code, (native, english) in _LANGUAGES.items()
}
"""Locale code to ``{"name": <name in the language>, "name_en": <English name>}``."""
