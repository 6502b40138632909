"""Balsam-Argo: run large campaigns of ordinary programs across HPC sites.

The import root. Cross-cutting pieces live here (the job state machine, the error type shown to
users); each part of the system is a subpackage mapped from its own top-level folder:
``balsam.site``, ``balsam.launcher``, ``balsam.transfer``, ``balsam.argo``, ``balsam.protos``.
"""

__version__ = "0.1.0"
