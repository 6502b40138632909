"""What both ends of Argo's channels share: the conversions between protobuf and the domain types
(``convert``), the channel itself (``channel``: TLS, token, message limits) and the numbered,
exactly-once outbox protocol (``outbox``).

The site and the coordinator both import this package; it imports neither of them.
"""
