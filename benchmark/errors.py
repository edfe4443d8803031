"""Errors a user can fix. The command line prints their message (what was wrong, where, what was expected) and
exits with status 2, before anything is written."""


class UserError(Exception):
    pass
