"""Baseline: what a user would do instead of Slipstream.

A transformers ``pipeline("text-classification")`` in PyTorch behind the same
HTTP layer (Litestar on uvicorn) and the same ``/classify`` request and
response shape, serving one request at a time. Scores are raw logits in label
order, as Slipstream's ``/classify`` returns them by default.

``python -m benchmarks.pipeline_server MODEL_DIR --port 3100``
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

import msgspec

# msgspec allows one array type per union, so lists of strings and of pairs share one.
ClassifyInput = str | list[str | list[str]]


class ClassifyRequest(msgspec.Struct, frozen=True):
    text: ClassifyInput
    consumer_group: str = "primary"


def build_app(model_dir: str, threads: int, max_length: int | None = None) -> Any:
    import torch
    from litestar import Litestar, get, post
    from litestar.exceptions import HTTPException
    from transformers import pipeline

    torch.set_num_threads(threads)
    # (Typed loosely: transformers' pipeline types do not follow its documented call forms.)
    classifier: Any = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device="cpu")
    if max_length is not None:
        # Truncate where Slipstream truncates (the artifact's maximum); a tokenizer saved
        # without model_max_length would otherwise not truncate at all.
        classifier.tokenizer.model_max_length = max_length
    label_order = [classifier.model.config.id2label[i] for i in range(classifier.model.config.num_labels)]
    # One request at a time: a pipeline is not meant to be called concurrently,
    # and concurrent calls would only share the same cores.
    lock = threading.Lock()

    def scores(inputs: list[str | dict[str, str]]) -> list[list[float]]:
        with lock, torch.inference_mode():
            outputs = classifier(inputs, top_k=None, function_to_apply="none", truncation=True)
        return [
            [by_label[label] for label in label_order]
            for by_label in ({o["label"]: o["score"] for o in out} for out in outputs)
        ]

    @post("/classify", sync_to_thread=True, status_code=200)
    def classify(data: ClassifyRequest) -> dict[str, Any]:
        text = data.text
        if isinstance(text, str):
            return {"result": scores([text])[0]}
        if not text:
            raise HTTPException(status_code=422, detail="empty input list")
        inputs: list[str | dict[str, str]] = [
            {"text": item[0], "text_pair": item[1]} if isinstance(item, list) else item for item in text
        ]
        return {"result": scores(inputs)}

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", sync_to_thread=False)
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    # Warm up so the first measured request does not pay for lazy initialisation.
    scores(["warm up"])
    return Litestar(route_handlers=[classify, health, ready])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a Hugging Face model directory (save_pretrained)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3100)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--max-length", type=int, default=None, help="truncate inputs to this many tokens")
    args = parser.parse_args(argv)
    import uvicorn

    uvicorn.run(
        build_app(args.model_dir, args.threads, args.max_length),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
