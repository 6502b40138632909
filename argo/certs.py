"""Argo's private certificate authority: ``argo certs init`` and ``argo certs site`` (see ``balsam.certs``)."""

from balsam.certs import init_ca, issue_client

__all__ = ["init_ca", "issue_client"]
