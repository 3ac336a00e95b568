"""Takeoff's management API, served on `management_port` (default: the inference port + 1).

`takeoff-client`'s `get_readers`, `create_reader`, `get_reader_config`,
`get_status` and `delete_reader` call it. A second Litestar app with its own
OpenAPI page (`/docs`), in the same process and on the same state as the
inference app (`slipstream.server.run` serves both):

- `reader_config`: the body of `POST /reader`, Takeoff's fields and group settings;
- `schemas`: the answers;
- `routes`: the handlers;
- `app`: the app.

Readers themselves live in `slipstream.server.readers`.
"""
