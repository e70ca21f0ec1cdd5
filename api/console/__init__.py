"""The staff console: server-rendered pages under ``/console/``, served by ``gridpay api`` with the
same principals, sessions and permissions as the API (docs/console.md).

Module map (each file one job):

- ``app``: the sub-application mounted at ``/console``: its routers, static files, the security
  headers of every answer, and the pages for refusals (sign in again, 403);
- ``i18n``: the one message catalogue (Chinese by default, English), amounts in yuan, local times;
- ``protection``: the cookies (session, pre-sign-in, language), CSRF tokens, the Content Security Policy;
- ``viewer``: who is looking: ``signed_in``, ``page(permission)`` (a refusal is audited), ``checked_form``;
- ``menu``: every page of the menu and the permission it needs;
- ``render``: templates and what every page is given;
- ``signin``, ``home``, ``approvals``, ``customers``: the pages.

A new page: a module here with its ``router`` (each route depends on ``page(permission)``; a form
posts through ``checked_form``), a line in ``menu.MENU``, a line in ``app.ROUTERS``, its template in
``templates/`` extending ``base.html``, and its labels in ``i18n.MESSAGES``.
"""
