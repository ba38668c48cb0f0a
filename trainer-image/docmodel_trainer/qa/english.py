"""The English the extractive questions are phrased in: articles, plurals, verb agreement, verb
forms, and which capitalised words of a label stay capitalised inside a question."""

from __future__ import annotations

import re

DAYS_MONTHS = {
    *("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    *("January", "February", "March", "April", "May", "June", "July", "August"),
    *("September", "October", "November", "December"),
}
_QUALIFIERS = {  # capitalised first words of labels that are not names
    *("default", "maximum", "minimum", "max", "min", "standard", "primary", "secondary"),
    *("annual", "daily", "weekly", "monthly", "new", "first", "last", "public", "internal"),
    *("external", "total", "average", "base", "other", "main", "temporary", "permanent"),
}
_NOT_PLURAL = {"status", "series", "news", "access", "analysis", "bus", "alias", "lens", "its"}
_IRREGULAR = {
    *("run:run", "set:set", "kept:keep", "paid:pay", "sent:send", "done:do", "given:give"),
    *("held:hold", "led:lead", "built:build", "chosen:choose", "made:make", "taken:take"),
    *("written:write", "bought:buy", "known:know", "shown:show", "stored:store"),
    *("deleted:delete", "completed:complete", "synced:sync", "controlled:control"),
}
_BASE_OF = dict(pair.split(":") for pair in _IRREGULAR)
# Stems that lost an "e" before "-ed": approv(e)d, handl(e)d, rotat(e)d, us(e)d, defin(e)d, ...
_E_DROPPED = re.compile(
    r"(?:[cgvzu]|[^aeioul]l|ul|at|ut|uir|[^aeiou][aiou][dkmn]|[^aeiou][aiu]r|[^s]s)$"
)


# --------------------------------------------------------------------------------------------
# Capitalisation


def soft_lower(text: str, context: str = "") -> str:
    """Lower-case ordinary capitalised words ("Carry-over", "Multi-Factor"); keep acronyms, code,
    day and month names, names `context` capitalises after a lower-case word ("the General
    Counsel"), and in a sentence-case label its later capitalised words ("United Kingdom per
    diem")."""
    words = text.split()
    plain = [bool(re.fullmatch(r"[A-Z][a-z']*(?:-[A-Za-z][a-z']*)*", w)) for w in words]
    sentence_case = any(w.islower() and len(w) > 3 for w in words)
    keep = [w in DAYS_MONTHS for w in words]
    start = 0
    while start < len(words):  # each run of capitalised words: "General Counsel", "Kingdom"
        end = start
        while end < len(words) and plain[end]:
            end += 1
        if end > start:
            run = " ".join(words[start:end])
            named = is_named(run, context) or (sentence_case and (start > 0 or end - start > 1))
            for i in range(start, end):
                keep[i] = keep[i] or named
        start = end + 1
    kept = zip(words, plain, keep, strict=True)
    return " ".join(w if k or not p else w.lower() for w, p, k in kept)


def names_an_instance(label: str, context: str) -> bool:
    """Whether a sentence-case label's capitalised first word picks out one instance of a term
    the passage uses on its own: "Netherlands per diem" where "A per diem is ...", "London
    hotel limit" beside "Hotel limit: ..." (so the word is a name, not a common noun)."""
    first, *rest = label.split()
    term = " ".join(rest)
    if len(rest) < 2 or not term.islower() or first.lower() in _QUALIFIERS:
        return False
    if not re.fullmatch(r"[A-Z][a-z]+", first):
        return False
    return (
        re.search(rf"(?:^|\b(?:a|an|the|no) ){re.escape(term)}\b", context, re.I | re.M) is not None
    )


def is_named(name: str, context: str) -> bool:
    """Whether `context` writes `name` capitalised after a lower-case word (so, as a name)."""
    return bool(context) and re.search(rf"\b[a-z]+[,;]? {re.escape(name)}\b", context) is not None


# --------------------------------------------------------------------------------------------
# Nouns


def article(noun: str) -> str:
    """The article of `noun`: "a" or "an"."""
    return "an" if noun[:1].lower() in "aeiou" else "a"


def is_plural(word: str) -> bool:
    """Whether `word` reads as a plural noun ("brokers"; not "status", "SLAs", "bus")."""
    word = word.strip("()")
    return (
        word.endswith("s")
        and not word.endswith(("ss", "us", "is", "ous"))
        and not word[:-1].isupper()
        and word.lower() not in _NOT_PLURAL
    )


def pluralise(noun: str) -> str:
    """The plural of `noun` ("broker" -> "brokers", "policy" -> "policies")."""
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "sh", "ch", "x", "z")) else "s")


def singular(word: str) -> str:
    """The singular of a plural `word` ("environments" -> "environment")."""
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


# --------------------------------------------------------------------------------------------
# Verbs


def be(phrase: str) -> str:
    """The "is" or "are" that agrees with the last word of `phrase`."""
    return "are" if phrase and is_plural(phrase.split()[-1]) else "is"


def do(phrase: str) -> str:
    """The "does" or "do" that agrees with the last word of `phrase`."""
    return "do" if phrase and is_plural(phrase.split()[-1]) else "does"


def participle_base(word: str) -> str | None:
    """The verb of a past participle ("requested" -> "request", "approved" -> "approve")."""
    word = word.lower()
    if word in _BASE_OF:
        return _BASE_OF[word]
    if len(word) < 4 or not word.endswith("ed") or word in ("speed", "need", "feed", "seed"):
        return None
    stem = word[:-2]
    if stem.endswith("i"):
        return stem[:-1] + "y"
    if (stem[-1] == stem[-2] and stem[-1] in "bdgmnprt") or stem.endswith("ell"):
        return stem[:-1]
    return stem + "e" if _E_DROPPED.search(stem) else stem


def third_person(verb: str) -> str:
    """The third person singular of `verb` ("request" -> "requests", "apply" -> "applies")."""
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ies"
    return verb + ("es" if verb.endswith(("s", "sh", "ch", "x", "z", "o")) else "s")


def verb_of_third_person(word: str) -> str | None:
    """The verb of a third-person form ("runs" -> "run", "applies" -> "apply"), or None."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("es") and word[:-2].endswith(("sh", "ch", "x", "o")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return None
