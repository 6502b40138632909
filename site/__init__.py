"""One Balsam site: its database, the ``balsam`` CLI and Python API, and (later) its agent."""

from balsam.site.api import Site

__all__ = ["Site"]
