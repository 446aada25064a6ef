"""How much of what clients write the assistant understands, per intent, on each corpus in tests/corpus/,
and what each reading step adds (the same corpus read with the step turned off).

    .venv/bin/python -m bench.assistant [--failures]

No services needed: the understanding step is pure (the demo salon of the YClients stand-in is the catalogue).
The goals are the issue's: at least 90 % of the project's corpus understood, 85 % of a corpus written by
someone who never saw the code (`blind3.toml`, the newest blind one, stands for it here; tests/corpus/README.md
gives each blind corpus's share when it was written, before anything was mended for it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench import goals
from ops.standins.yclients import generate_salon
from shared.assistant.evaluation import Score, load_corpus, score
from shared.assistant.language.catalogue import Catalogue, catalogue
from shared.assistant.understanding import Steps, understand

CORPORA = Path(__file__).resolve().parents[1] / "tests" / "corpus"
FILES = ("messages.toml", "heldout.toml", "blind.toml", "blind2.toml", "blind3.toml")
ABLATIONS = {
    "without lemmas (pymorphy3)": Steps(lemmas=False),
    "without typo matching (rapidfuzz)": Steps(typos=False),
    "without Latin letters read as Russian": Steps(latin=False),
    "without dateparser (the rules alone)": Steps(dateparser=False),
}


def demo_catalogue() -> Catalogue:
    salon = generate_salon(962302, clients=0, records=0)
    return catalogue(
        [{"id": int(s["id"]), "title": s["title"], "category_id": s["category_id"]} for s in salon.services],
        [{"id": int(m["id"]), "name": m["name"]} for m in salon.staff],
    )


def per_intent(result: Score) -> str:
    return "  ".join(
        f"{intent} {result.understood_by_intent[intent]}/{result.by_intent[intent]}"
        for intent in sorted(result.by_intent, key=lambda i: -result.by_intent[i])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--failures", action="store_true", help="print each message not understood and why")
    args = parser.parse_args()
    known = demo_catalogue()
    corpora = {name: load_corpus(CORPORA / name) for name in FILES}
    shares = {}
    for name, corpus in corpora.items():
        result = score(corpus, known)
        shares[name] = result.share
        print(f"{name}: {result.understood}/{result.total} understood ({result.share:.1%})")
        print(f"  per intent: {per_intent(result)}")
        if args.failures:
            for expected, wrong in result.failures:
                print(f"  [{expected.context}] {expected.text!r}: {'; '.join(wrong)}")
    every = [m for corpus in corpora.values() for m in corpus.messages]
    print(f"\nwhat each step adds (all {len(every)} messages of the corpora):")
    full = sum(score(corpus, known).understood for corpus in corpora.values())
    print(f"  all steps: {full}/{len(every)} ({full / len(every):.1%})")
    for label, steps in ABLATIONS.items():
        without = sum(score(corpus, known, steps).understood for corpus in corpora.values())
        print(f"  {label}: {without}/{len(every)} ({without / len(every):.1%}), the step adds {full - without}")
    texts = [m.text for m in every]
    today = corpora["messages.toml"].today
    for text in texts:  # warm: the analyser's dictionaries and the caches, as in a worker after its first message
        understand(text, known, today)
    started = time.perf_counter()
    for text in texts:
        understand(text, known, today)
    per_message = (time.perf_counter() - started) / len(texts) * 1000
    print(f"\nreading one message: {per_message:.2f} ms (mean over {len(texts)}, warm caches)")
    print(goals.at_least("share understood, project corpus", shares["messages.toml"] * 100, 90, " %"))
    print(goals.at_least("share understood, corpus written blind", shares["blind3.toml"] * 100, 85, " %"))


if __name__ == "__main__":
    main()
