"""The clinicians' API: alerts, patients, thresholds, a live feed, FHIR and CSV export,
identity, the worklist page; OpenID Connect tokens, care teams enforced by PostgreSQL's
row-level security, an audit record per request.

`app.create_app` assembles the routers (`routers/`); `server.run_api` runs it.
"""
