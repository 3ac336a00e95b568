"""service stage: HTTP serving of export artifacts behind a length-bucketed dynamic batcher.

- `config`: every setting (service and per consumer group) and where it comes from.
- `tokenization`, `tokenize_queue`: texts and pairs -> token ids, off the event loop.
- `scheduling`, `batcher`: per-bucket queues and the batcher (no HTTP; usable from
  any asyncio front end).
- `groups`: one consumer group = manifest + tokenizer + engine + batcher.
- `app`, `schemas`, `inputs`, `errors`, `metrics`: the Litestar app and its contract.
- `server`, `cli`: `slipstream serve` on uvicorn with graceful shutdown.
"""
