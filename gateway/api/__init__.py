"""The HTTP API: authenticate, validate, admit, enqueue; read, long-poll, review and cancel jobs.

    app.py           create_app: the routers assembled, the lifespan, the one error envelope
                     (every error as {"error": {"type", "message"}}; 503 while Redis is down)
    hot_routes.py    POST /v1/jobs and GET /v1/jobs/{id} answered straight from ASGI (the rest: FastAPI)
    dependencies.py  Gateway (what the routes share) and the auth dependency (Service)
    bodies.py        request bodies parsed into the contract's models, size limits first
    admission.py     the policies' plan and the quotas at the door, refusals audited
    jobs.py          /v1/jobs: submit, read and long-poll, review a draft, cancel
    health.py        /healthz and /readyz
    metrics.py       /metrics: Prometheus text for operators, loopback only (gateway/metrics/)

The API never imports ``workers``: jobs are enqueued by dotted path (gateway.jobs.JOB_FUNC).
The compatible endpoints (the OpenAI and Anthropic wire formats) are modules of their own
(dropin.py, openai_routes.py, anthropic_routes.py), each a router that create_app includes.
"""

from gateway.api.app import create_app

__all__ = ["create_app"]
