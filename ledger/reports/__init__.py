"""Finance reports from one definition (docs/reports.md).

``definition``: a report as data (``ReportDoc``: title, parameters, sections of typed columns, rows,
totals, a chart of money). ``render_html``, ``render_csv``, ``render_xlsx``: the three formats, from
any definition. ``catalogue``: the reports by name, with their parameters, as ``gridpay report`` and
``GET /v1/reports/{name}`` run them. The reports themselves: ``collections`` (实收, daily and
monthly collections), ``month_end`` (the month-end summary), ``aging`` (receivables aging, the
arrears list), ``receivables`` (a billing period's, by customer type), ``debits`` (direct debits
by bank, channel and state); their figures for the glance and the collection rate are
``ledger.finance_reports``'.
"""
