"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """A problem with the user's input (path, data, option). Never a bug in llm_forget."""


def closest(name: str, choices) -> str:
    """' (did you mean X?)' for the closest of `choices`, or '' when none is close."""
    import difflib

    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
