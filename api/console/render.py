"""Pages from Jinja2 templates (``templates/``, autoescaped), each given the words of its language,
the operator's menu, the CSRF token of its forms and the formatters of amounts and times; a page that
shows banks is handed their names (``names``, read by ``bank_names`` in a worker thread) and says a
bank as the reports do: ``bank(code)``, ``中国工商银行（0102）`` / ``ICBC (0102)``.

The language: ``?lang=zh|en`` chooses it (kept in the ``gp_lang`` cookie), else the cookie, else Chinese.
"""
from __future__ import annotations

from datetime import timedelta

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

from api.console.i18n import DEFAULT_LANG, LANGS, local_time, translator, yuan
from api.console.menu import menu_for
from api.console.protection import LANG_COOKIE, set_cookie
from api.console.viewer import Viewer, context_of
from api.deps import ApiContext
from ledger.reports.context import ReportContext, report_context
from ledger.reports.definition import say

TEMPLATES = Environment(loader=PackageLoader("api.console", "templates"), autoescape=True,
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
LANG_KEPT = int(timedelta(days=365).total_seconds())


def language(request: Request) -> tuple[str, bool]:
    """(the page's language, whether the query chose it)."""
    asked = request.query_params.get("lang")
    if asked in LANGS:
        return asked, True
    kept = request.cookies.get(LANG_COOKIE)
    return (kept if kept in LANGS else DEFAULT_LANG), False


def bank_names(ctx: ApiContext) -> ReportContext:
    """The site's banks' names as the reports have them (the ``banks`` table, the configuration's
    ``name`` and ``name_en``); a read of the database, so called off the event loop."""
    return report_context(ctx.engine, ctx.clock, ctx.settings.banks)


def bank_namer(names: ReportContext, lang: str):
    """``bank(code)``: the bank's name with its code in the page's language (the code alone when unnamed)."""
    return lambda code: say(names.bank_named(code), lang)


def render(request: Request, template: str, viewer: Viewer | None, status: int = 200, **values) -> HTMLResponse:
    lang, chosen = language(request)
    if (names := values.pop("names", None)) is not None:
        values["bank"] = bank_namer(names, lang)
    page = TEMPLATES.get_template(template).render(
        t=translator(lang), lang=lang, other_lang=LANGS[1 - LANGS.index(lang)], path=request.url.path,
        yuan=yuan, when=local_time(context_of(request).clock), viewer=viewer,
        menu=menu_for(viewer.principal) if viewer else [], csrf=values.pop("csrf", viewer.csrf if viewer else ""),
        **values)
    response = HTMLResponse(page, status)
    if chosen:
        set_cookie(response, request, LANG_COOKIE, lang, max_age=LANG_KEPT)
    return response
