"""A pytest run's work, without pytest: the session object the plugin hands off to
(:mod:`~gpubench.session.bench`), what collection refuses or skips
(:mod:`~gpubench.session.collection`), the progress display, and the end-of-session
summary. Parent side: it starts workers through :mod:`gpubench.runner` and never runs
in one."""
