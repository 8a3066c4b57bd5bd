"""The pages' languages: English, Spanish and Portuguese, as LA Referencia's readers read them.

Messages are gettext catalogues (`locales/<lang>/LC_MESSAGES/messages.po`, extracted with
Babel from the page templates, the page scripts and this module by `scripts/i18n.sh`): the
templates are translated on the server (Jinja2's i18n extension), and the scripts get the
same catalogue as JSON inside the page, so one file per language holds every string a reader
sees. Country names come from CLDR in the chosen language (Babel's `Locale.territories`),
numbers and dates are formatted in the browser with `Intl` in the chosen locale.

The language is, in this order: `?lang=`, the `lang` cookie the language menu sets, the
reader's `Accept-Language` (q-values honoured, `es-AR` matching `es`), else English. The
locale used for numbers keeps the reader's region when it is of the chosen language (`es-AR`
writes 12.345, `es-MX` 12,345), else Latin America's (`es-419`, `pt-BR`).
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from urllib.parse import parse_qsl, quote

from babel import Locale, UnknownLocaleError
from babel.core import negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LANGUAGES = ("en", "es", "pt")
DEFAULT = "en"
COOKIE = "lang"
LOCALES = Path(__file__).with_name("locales")
# The number and date locale when the reader's own region is not of the chosen language.
REGIONAL = {"en": "en", "es": "es-419", "pt": "pt-BR"}
_TAG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$|^\*$")


def pgettext(context: str, message: str) -> str:
    """Marks a message for extraction (Babel reads `pgettext` calls); translated later."""
    return message


# Words of export file names (web/exports.py `file_name`), translated when a download link
# carries `lang=` (the dashboard's do): `usage-global-…-month.csv` is `uso-global-…-mes.csv`.
FILE_WORDS = (
    pgettext("file name", "global"),
    pgettext("file name", "node"),
    pgettext("file name", "source"),
    pgettext("file name", "item"),
    pgettext("file name", "items"),
    pgettext("file name", "sources"),
    pgettext("file name", "top"),
    pgettext("file name", "usage"),
    pgettext("file name", "records"),
    pgettext("file name", "cumulative"),
    pgettext("file name", "visitors"),
    pgettext("file name", "country"),
    pgettext("file name", "level"),
    pgettext("file name", "series"),
    pgettext("file name", "day"),
    pgettext("file name", "week"),
    pgettext("file name", "month"),
    pgettext("file name", "quarter"),
    pgettext("file name", "year"),
    pgettext("file name", "views"),
    pgettext("file name", "downloads"),
    pgettext("file name", "outlinks"),
    pgettext("file name", "conversions"),
    pgettext("file name", "total"),
    pgettext("file name", "period"),
    pgettext("file name", "added"),
    pgettext("file name", "held"),
    pgettext("file name", "language"),
    pgettext("file name", "subject"),
    pgettext("file name", "resource_type"),
)


@dataclass(frozen=True)
class Choice:
    """The page's language (`en`, `es`, `pt`) and the BCP 47 locale its numbers use."""

    language: str
    locale: str


def parse_accept_language(header: str | None) -> list[str]:
    """The language tags of an `Accept-Language` header, most wanted first (RFC 9110: by
    q-value, ties in the header's order; `q=0` means "not this"); malformed parts are
    skipped, as a header is the browser's, not the reader's, to get right."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")):
        pieces = [p.strip() for p in part.split(";")]
        tag = pieces[0]
        if not tag or not _TAG.match(tag):
            continue
        quality = 1.0
        for parameter in pieces[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = -1.0
        if 0 < quality <= 1:
            ranked.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(ranked)]


def _supported(value: str | None) -> str | None:
    text = (value or "").strip().lower()
    return text if text in LANGUAGES else None


@lru_cache(maxsize=512)
def negotiate(query: str | None, cookie: str | None, accept_language: str | None) -> Choice:
    """See the module's docstring for the order; an unknown `?lang=` or cookie is ignored.
    Kept for the few hundred headers browsers send (bounded: least recently used out)."""
    wanted = parse_accept_language(accept_language)
    language = _supported(query) or _supported(cookie)
    if language is None:
        language = negotiate_locale(wanted, list(LANGUAGES), sep="-") or DEFAULT
    for tag in wanted:
        if tag.split("-")[0].lower() == language and "-" in tag:
            try:
                Locale.parse(tag, sep="-")
            except (ValueError, TypeError, UnknownLocaleError):
                continue
            return Choice(language, tag)
    return Choice(language, REGIONAL[language])


def choose(request) -> Choice:
    """The language of a page request (FastAPI/Starlette `Request`)."""
    return negotiate(
        request.query_params.get("lang"),
        request.cookies.get(COOKIE),
        request.headers.get("accept-language"),
    )


@cache
def _catalog(language: str):
    path = LOCALES / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as handle:
        return read_po(handle, locale=language)


@cache
def translations(language: str) -> Translations:
    """gettext translations of `language` for the templates (English: the messages as
    written). Compiled from the .po in memory: the .po is the one file to edit."""
    if language == DEFAULT:
        return Translations()
    buffer = io.BytesIO()
    write_mo(buffer, _catalog(language))
    buffer.seek(0)
    return Translations(buffer, domain="messages")


@cache
def script_messages(language: str) -> dict[str, str]:
    """The catalogue as the page scripts read it: English message → translation (contexts
    other than the page scripts' own left out). Empty for English."""
    if language == DEFAULT:
        return {}
    return {
        message.id: message.string
        for message in _catalog(language)
        if message.id and message.string and not message.context
    }


@cache
def territories(language: str) -> dict[str, str]:
    """CLDR's country names in `language`, by ISO 3166 alpha-2 code."""
    names = Locale.parse(language).territories
    return {code: name for code, name in names.items() if len(code) == 2 and code.isalpha()}


def language_names() -> dict[str, str]:
    """Each language by its own name (a reader looks for their language in theirs)."""
    names = {}
    for language in LANGUAGES:
        name = Locale.parse(language).get_display_name(language) or language
        names[language] = name[:1].upper() + name[1:]
    return names


def translate_file_name(name: str, language: str) -> str:
    """An export file name's words in `language` (see FILE_WORDS); dates and keys unchanged."""
    if language == DEFAULT:
        return name
    catalog = translations(language)
    known = set(FILE_WORDS)
    words = []
    for word in name.split("-"):
        stem, dot, extension = word.partition(".")
        if stem in known:
            stem = catalog.pgettext("file name", stem)
        words.append(stem + dot + extension)
    return "-".join(words)


def disposition(name: str, language: str) -> bytes:
    """`filename=` in ASCII (accents dropped) for old clients, and `filename*=` in UTF-8
    (RFC 6266) with the words as written: `año`, `diário`."""
    translated = translate_file_name(name, language)
    plain = unicodedata.normalize("NFKD", translated).encode("ascii", "ignore").decode()
    return f"filename=\"{plain}\"; filename*=UTF-8''{quote(translated, safe='')}".encode()


_DISPOSITION = re.compile(rb'filename="([^"]*)"')


class TranslatedDownloads:
    """Translates the file name of a download (`Content-Disposition`) when its request has a
    supported `lang=` (the dashboard's download links carry the page's language)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        language = _supported(query.get("lang"))
        if language in (None, DEFAULT):
            await self.app(scope, receive, send)
            return

        async def renamed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for key, value in message.get("headers", []):
                    if key.lower() == b"content-disposition":
                        value = _DISPOSITION.sub(
                            lambda m: disposition(m.group(1).decode(), language), value
                        )
                    headers.append((key, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, renamed)
