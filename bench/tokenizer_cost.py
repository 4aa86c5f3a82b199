"""How much an exact cl100k_base token count costs next to the ~4-characters estimate.

    .venv/bin/python bench/tokenizer_cost.py

Prints, per prompt size, the median time of `len(text) // 4` and of tiktoken's
`encode_ordinary` (the count `prompt_tokens_over` would use), and how far the estimate
is from the count. English prose and JSON-ish code, the usual prompt material.
"""

from __future__ import annotations

import statistics
import time

from bastion_edge.core.openai_tokenizer import cl100k_base

PROSE = ("The migration guide maps each OpenAI model to a Bastion model by use case; "
         "long prompts go to the long-context model. ")
CODE = 'def handler(event):\n    return {"status": 200, "body": json.dumps(event["items"])}\n'


def median_seconds(call: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    started = time.perf_counter()
    encoder = cl100k_base()
    print(f"load: {(time.perf_counter() - started) * 1000:.0f} ms (once per process)")
    print(f"{'kind':<6} {'chars':>9} {'estimate':>10} {'tokens':>8} {'len//4 us':>10} "
          f"{'encode us':>11} {'us/KB':>7}")
    for kind, unit in (("prose", PROSE), ("code", CODE)):
        for size in (1_000, 10_000, 100_000, 1_000_000):
            text = (unit * (size // len(unit) + 1))[:size]
            repeat = 50 if size <= 100_000 else 5
            cheap = median_seconds(lambda text=text: len(text) // 4, repeat)
            exact = median_seconds(lambda text=text: len(encoder.encode_ordinary(text)), repeat)
            tokens = len(encoder.encode_ordinary(text))
            print(f"{kind:<6} {size:>9} {size // 4:>10} {tokens:>8} {cheap * 1e6:>10.2f} "
                  f"{exact * 1e6:>11.0f} {exact * 1e6 / (size / 1000):>7.1f}")


if __name__ == "__main__":
    main()
