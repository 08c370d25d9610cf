"""Dev and test process tooling: a local Synapse, accounts on it, child processes, a test user.

Nothing in here is on the import path of ``surface run`` with a configured homeserver: the
embedded default (no ``MATRIX_HOMESERVER``) and ``surface dev-homeserver`` import it lazily,
the e2e fixtures and the benchmarks import it directly. The code is synchronous where it
drives child processes from plain threads or pytest fixtures, async where a Matrix client
or a benchmark's event loop needs it.

    process.py     a child process: start, wait until an HTTP endpoint answers, stop, log tail;
                   free loopback ports
    errors.py      DevHomeserverError and its subclasses
    accounts.py    register-or-login through Synapse's shared-secret admin API
    homeserver.py  the local Synapse launcher (config generation, start, stop, users) and
                   the ``surface dev-homeserver`` foreground loop
    bot.py         ``surface run`` as a child process against a local Synapse (BotProcess)
    user.py        a Matrix user driven by a test or a benchmark (UserClient, onboard)

The package imports nothing else of ours, so the Synapse image (which installs the whole
``runtime`` package) runs ``homeserver.py`` and ``accounts.py`` from its entrypoint and
its register job; ``user.py`` is the one place besides the bot's Matrix adapter that
imports matrix-nio, as a user's client would.
"""
