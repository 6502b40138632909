"""The monitoring web dashboard of the coordinator (docs/web.md).

    data       what the pages show, read from the coordinator's own store (never a copy)
    access     who is asking: tokens from a cookie or a bearer header, CSRF, projects
    app        the Starlette application: pages, the JSON API, the live feed
    serve      uvicorn on a thread of its own beside the gRPC server, TLS off loopback
"""
