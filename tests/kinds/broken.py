"""A job kind the tests declare whose module fails to import: the error must be one line naming the module."""

raise RuntimeError("broken kind module raising at import on purpose")
