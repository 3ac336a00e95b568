"""Past one machine: Slipstream as a Ray Serve application (`pip install 'slipstream[ray]'`).

Each replica runs the whole per-machine stack (the Litestar app of
`slipstream.server`, with its engines and length-bucketed batchers); Ray Serve
routes requests to the least busy replica, restarts failed ones and autoscales on
the tokens queued per replica.

- `settings`: the Ray settings (replicas, autoscaling, routing limits, local Ray).
- `config`: the settings the replicas get, the deployment options, the Serve config
  (`slipstream ray --print-config`).
- `deployment`: the deployment class (app builder, replica header, health check,
  autoscaling stats); `app`: the application and the Serve config's builder.
- `autoscaling`: the queued-tokens policy; `proxy`: the middleware in Ray's proxy.
- `run`, `cli`: `slipstream ray`. Guide: docs/deploy.md.
"""
