"""What both dashboards share: the coordinator's (``balsam.argo.web``) and a lone site's (``balsam.site.web``).

    guard      security headers, CSRF values, the origin check, where a token comes from
    serving    uvicorn on a thread of its own, on a socket bound here, TLS when given certificates
    pages      the Jinja2 environment: the shared page frame (templates/frame.html) and style sheet

docs/web.md says why Starlette and uvicorn, and what each page shows.
"""
