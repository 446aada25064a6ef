"""The message as one plain text: lower case, ё as е, emoji read as words, chat shorthand expanded, words
typed in Latin letters read back into Cyrillic, letters held down squeezed ("приветттт"), links as the word
"ссылка", and phone numbers left out (a number is data: its "+" and digits must not read as an answer)."""

from __future__ import annotations

import re
import unicodedata

from shared.assistant.language import vocabulary

URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w.-]+\.(?:ru|com|me|net|org|su|рф)(?:/\S*)?", re.IGNORECASE)
# A phone number as people type it (+7 (921) 555-44-33, 89215554433): ten digits or more, with separators.
PHONE_NUMBER = re.compile(r"(?<![\w+])\+?\d(?:[\s\-().]{0,2}\d){9,14}(?!\w)")
LATIN_WORD = re.compile(r"[a-z']+")
REPEATED = re.compile(r"([а-яa-z])\1{2,}")
VOWELS = set("aeiouy")
WORD = re.compile(r"[а-яa-z]+")


def _read_latin(word: str) -> str:
    sequences, letters, words = vocabulary.latin()
    if word in words:
        return words[word]
    out: list[str] = []
    i = 0
    while i < len(word):
        for length in (4, 3, 2, 1):
            chunk = word[i : i + length]
            if len(chunk) == length and chunk in sequences:
                out.append(sequences[chunk])
                i += length
                break
        else:
            letter = word[i]
            if letter == "y":  # after a vowel "й" (zdravstvuyte), else "ы" (vy)
                out.append("й" if i and word[i - 1] in VOWELS else "ы")
            else:
                out.append(letters.get(letter, ""))
            i += 1
    return "".join(out)


def _emoji(text: str) -> str:
    """Emoji read as words, put first: "шеллачок к Свете? 💅" is one request, not a second one for manicure."""
    words = vocabulary.emoji_words()
    said: list[str] = []
    out = []
    for char in text:
        if char in words:
            if words[char] not in said:
                said.append(words[char])
            out.append(" ")
        elif unicodedata.category(char) in ("So", "Sk", "Cs", "Co") or char in "\ufe0f\u200d":
            out.append(" ")
        else:
            out.append(char)
    return " ".join([*said, "".join(out)]) if said else "".join(out)


def normalise(text: str, *, latin: bool = True) -> str:
    """One plain text to read; URLs become the word "ссылка" (a mark of advertising, never followed)."""
    text = unicodedata.normalize("NFKC", text)
    text = URL.sub(" ссылка ", text)
    # A phone number is data, never an answer: its "+" is not the chat's "+" for yes, its digits not a choice.
    text = PHONE_NUMBER.sub(" ", text)
    text = _emoji(text).lower().replace("ё", "е")
    if latin:
        text = LATIN_WORD.sub(lambda m: _read_latin(m.group(0)), text)
    text = REPEATED.sub(r"\1", text)
    shorthand = vocabulary.chat_words()
    return WORD.sub(lambda m: shorthand.get(m.group(0), m.group(0)), text)
