"""``receiptflow web``: the card holder's own page, served by the project (see docs/web.md).

It sits beside the batch jobs: it uses the core, the profile store and views, the register client
and the subject-access jobs, and only the command line imports it. :mod:`.app` puts the application
together, :mod:`.routes` holds the handlers, :mod:`.access` who may use each (the one 401/403 and
CSRF check), :mod:`.render` how a page or a refusal is answered, :mod:`.state` the install's state
that the handlers read from the request, :mod:`.auth` sign-in links, roles, CSRF and rate limits,
:mod:`.data` what it reads and changes (as the least Redis role that suffices), :mod:`.pages` and
:mod:`.charts` what each page shows, :mod:`.i18n` and :mod:`.texts` the two languages.
"""
