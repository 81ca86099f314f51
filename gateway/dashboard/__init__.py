"""The dashboard the API serves at ``/dashboard`` (routes: gateway/api/dashboard.py).

sessions.py   one-time login links and the sessions they open (only hashes in Redis)
data.py       queues, workers and bounded job lists read from Redis, as the page shows them
series.py     the last hour and the last 7 days from the audit log, read incrementally
static/       the page: index.html, app.js (charts drawn as SVG), app.css; no build step
"""
