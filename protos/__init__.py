"""The wire vocabulary shared by sites and Argo: the .proto files and their generated modules.

Regenerated (or checked) by ``protos/generate.py``. What the messages mean in the domain, and the
conversions both ends use, are in ``balsam.wire``.
"""
