"""One Balsam site: its database, the ``balsam`` CLI and Python API, its agent and its side of Argo.

``from balsam.site import Site`` is the entry point for scripts. It is imported on first use, so a
module that needs only a light piece (``balsam.site.templates``, say) does not load the database
stack with it.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from balsam.site.api import Site
    from balsam.site.dynamic import current_job, kill, spawn_child

__all__ = ["Site", "current_job", "spawn_child", "kill"]


def __getattr__(name: str) -> Any:
    if name == "Site":
        from balsam.site.api import Site

        return Site
    if name in ("current_job", "spawn_child", "kill"):
        from balsam.site import dynamic

        return getattr(dynamic, name)
    raise AttributeError(f"module 'balsam.site' has no attribute {name!r}")
