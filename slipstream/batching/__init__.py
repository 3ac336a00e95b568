"""The batching core: texts in, logits out, no HTTP.

Data flows through it in this order:

- `tokenization`, `tokenize_queue`: texts and pairs -> token ids (the Rust
  tokenizer, off the event loop, coalesced across concurrent requests);
- `scheduling`: per-length-bucket queues and the rule for which batch runs next;
- `batcher`: admission and backpressure, engine worker threads that pad and
  run batches, results scattered back to each request;
- `group`: a consumer group = manifest + tokenizer + engine + batcher, and
  `ModelGroup.score`, the whole path of one request;
- `settings`, `errors`, `metrics`: a group's typed settings (which embed the
  engine's), the errors a client can be told about, what the core reports.

Any asyncio front end (the HTTP server in `slipstream.server`, tests, a
benchmark) drives it through `ModelGroup`.
"""
