"""Reading a client's message: a pipeline of small pure steps over one normalised text.

normalise (case, ё, emoji, chat shorthand, Latin letters) -> tokens with lemmas (pymorphy3, unknown words
matched to the vocabulary by similarity with rapidfuzz) -> what is named (services, masters: `catalogue`;
days and times: `when`) -> what is asked (`intents`). Vocabulary lives in `shared/assistant/vocabulary/*.toml`,
not in code; `shared.assistant.understanding.understand` puts the steps together.
"""
