"""The launcher: the pilot that runs a site's jobs inside a batch allocation or on a workstation.

Pure cores (``nodes``, ``mpi``, ``resources``, ``lifecycle``, ``commands``, ``containers``) and the
shells that act on them (``store``: the database; ``executor``, ``ensemble``: processes; ``master``:
the main loop; ``start``: discovery and start-up). Started by ``balsam launcher``.
"""
