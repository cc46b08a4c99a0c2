"""The clinicians' side: HTTP API, live feed, worklist page, authentication, audit."""
