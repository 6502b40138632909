"""The Argo coordinator: the global workflow graph over several sites.

``balsam.argo.coordinator.Coordinator`` puts the parts together (workflows, sites, the sync channel,
placement, each in its own module); ``server`` serves them over gRPC, ``client.ArgoClient`` and
``cli`` (the ``argo`` command) use them. Task state is written by ``db.taskstore`` alone.
"""
