"""The HTTP front end: the Litestar app around the batching core, and `slipstream serve`.

- `settings`, `config`: the service's settings and where they come from (flags,
  environment, config file), derived from the typed definitions.
- `app`: the Litestar app; `api/`: its routes, one module per API family
  (`takeoff`, `tei`, `operations`); `inputs`, `scores`: wire input forms and
  logits -> scores.
- `errors`, `auth`, `middleware`, `disconnect`: the JSON error contract, bearer
  auth, request metrics, cancellation when a client goes away.
- `state`, `lifespan`, `metrics`: shared state, start-up/warm-up/drain, Prometheus.
- `run`, `cli`: `slipstream serve` on uvicorn with graceful shutdown.
"""
