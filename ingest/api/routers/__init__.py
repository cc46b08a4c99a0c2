"""The API's routes, one router per resource; `ingest.api.app` assembles them."""
