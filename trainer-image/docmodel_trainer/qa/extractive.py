"""Question/answer pairs read off the text itself: deterministic, no model needed.

Every question is one a person would ask; every answer is a short span of the passage (with
trailing punctuation, a leading "that" and an unopened ")" trimmed):

- definitions  "A runbook is a step-by-step guide ..."    -> What is a runbook?
               "Error budget means ..."                    -> What does error budget mean?
               "Depot is the analytics warehouse ..."      -> What is Depot?
- facts        "The base currency is EUR"                  -> What is the base currency?
               "The CEO is Ingrid Vos"                     -> Who is the CEO?
               "The standard probation period is 3 months" -> How long is the standard
                                                              probation period?
- defaults     "Canary traffic defaults to 5 percent"      -> What is the default canary traffic?
- key/value    "Label: value" lines, asked about what the document is about: its title read as
               a thing ("the Invoice Service"), a document ("the Leave Policy") or a topic
               ("event streaming"), with the question word the label and value call for:
               "Owner: Billing Platform team"   -> Who is the owner of the Invoice Service?
               "Requested by: account manager"  -> Who requests credit notes and refunds?
               "Applies to: all employees"      -> Who does the Password Standard apply to?
               "Carry-over limit: 5 days"       -> What is the carry-over limit in the Leave Policy?
               "Lockout duration: 30 minutes"   -> How long is the lockout for <topic>?
               "Stand-up time: 09:30"           -> When is the stand-up for <topic>?
               "Policy review: every 12 months" -> How often is the policy review for <topic>?
               "Broker count: 6"                -> How many brokers does event streaming have?
               "Legal requests: legal@x.test"   -> Where are legal requests sent for <topic>?
               "Port range for pods: 1024 to 9999" -> What is the port range for pods?
- tables       row "dev | kube-dev-1" under "Environment | Cluster"
                                                -> What is the cluster of the dev environment?
               with the same question words, and "Meaning" -> What does the nit label mean?,
               "Handled by" -> Who handles the L1 support level?, "Used for" -> What is the
               larkspur.internal domain used for?, "Partitions: 48" -> How many partitions
               does the shipment.events topic have?, row "Above EUR 50,000" under "Purchase
               amount" -> ... for a purchase amount above EUR 50,000?
- pages        a first sentence "This page explains ..." -> What does the Purchasing page cover?

Labels are lower-cased inside a question ("the carry-over limit") except acronyms, day and
month names and names: words the passage capitalises after a lower-case word elsewhere ("the
General Counsel"), later capitalised words of a sentence-case label ("United Kingdom per
diem"), and a first word that picks out one instance of a term the passage uses on its own
("London hotel limit" beside "Hotel limit: ..."). A capitalised first word with no such
evidence is read as a common noun ("Rotterdam endpoint" becomes "the rotterdam endpoint").
These rules, and the articles, plurals and verb forms of the questions, are in `english`.

Left out on purpose, as fewer clean pairs beat more awkward ones: labels that are modal,
negated or end in a bare participle ("Must be resolved", "Not allowed in ...", "Review
required"); values that are clauses or conditions ("the last 10 passwords cannot be reused",
"Paid every 2 years") or a bare "Required"/"Optional"; key/values under Template or Style
headings (fields, not facts); definition terms that are sentence fragments ("In production the
default is ..."); "X are the only ..." sentences; first sentences that do not say what the page
is about.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from docmodel_trainer.chunking import Passage
from docmodel_trainer.parsing import Block
from docmodel_trainer.qa import english

MAX_ANSWER_WORDS = 25
MAX_CELL_WORDS = 12
EMPTY_CELLS = {"", "-", "—", "n/a", "na", "none", "no", "yes", "tbd", "?"}

# Sentences.
_KEY_VALUE = re.compile(r"^[-*\u2022]?\s*([A-Za-z][\w /()'&.+-]{0,48}?)\s*:\s+(\S.{0,150})$")
_DEFINITION = re.compile(
    r"^(?:(?P<article>an?|the)\s+)?(?P<term>[A-Za-z][\w`'/-]*(?:\s+[A-Za-z0-9][\w`'/-]*){0,4})\s+"
    r"(?P<verb>is|are|means|refers to)\s+(?P<rest>.+)$",
    re.IGNORECASE,
)
_DEFAULTS_TO = re.compile(
    r"^(?:(?P<article>the)\s+)?(?P<term>[A-Za-z`][\w`'/ -]{1,60}?)\s+defaults?\s+to\s+(?P<value>.+)$",
    re.IGNORECASE,
)
_CLAUSE_SPLIT = re.compile(r";\s+|,\s+(?:and|but|while|so)\s+|\s+and\s+(?=the\s)|,\s+which\s+")
_BAD_TERMS = {
    *("it", "this", "that", "there", "these", "those", "they", "he", "she", "we", "you"),
    *("what", "which", "who", "every", "each", "all", "here", "one", "its", "our", "most"),
    *("some", "many", "any", "no", "both", "such", "other", "more", "few", "several"),
    # A term that starts with a preposition or a conjunction is a fragment of its sentence.
    *("in", "on", "at", "for", "with", "by", "from", "if", "when", "once", "after", "before"),
    *("because", "so", "but", "and", "or", "as", "to", "of", "during", "since", "until"),
    *("unless", "while", "where", "how", "why"),
}
_BAD_TERM_WORDS = {
    *("not", "also", "only", "usually", "always", "never", "then", "now", "still"),
    *("the", "a", "an", "must", "can", "will", "should", "may", "be", "been"),
}
_DEF_START = re.compile(r"^(an?|the)\s", re.IGNORECASE)
_NOT_A_DEFINITION = re.compile(
    r"^the\s+(?:same|only|last|first|main|best|most|key|biggest|largest|smallest)\b", re.I
)
_PASSIVE = re.compile(r"^(\w+ed|\w+en|required|optional|available|responsible|used|run|set)\b")
_PERSON = re.compile(r"^[A-Z][a-z]+(?: (?:van|de|der|von|da|di|le|la))?(?: [A-Z][a-z'-]+){1,2}$")

# Labels: what their last noun (the head) or their form asks for.
_PREPOSITIONS = {"of", "for", "per", "in", "during", "on", "to", "with", "by", "from", "at"}
_MODAL_OR_NOT = {"must", "may", "can", "should", "will", "shall", "not", "no", "never"}
_WH = {"who", "what", "when", "where", "how", "which", "why"}
_WHO_HEADS = {
    *("owner", "approver", "lead", "manager", "officer", "chair", "counsel", "ceo", "cfo"),
    *("cto", "director", "publisher", "interviewer", "interviewers", "reviewer", "reviewers"),
    *("buddy", "sponsor", "contact", "team", "head"),
}
_DURATION_HEADS = {"timeout", "duration", "length", "period", "leave", "turnaround", "window"}
_NO_WHEN_HEADS = {"hours", "window", "sla", "period", "timeout", "limit"}
_FOR_HEADS = {  # "the threshold for the Error rate signal", not "of"
    *("due", "meeting", "timeout", "threshold", "action", "approver", "approval", "deadline"),
    *("limit", "discount", "surcharge", "turnaround", "template", "target", "fee", "price"),
    *("paging", "response"),
}
_ROUTED = {"requests", "questions", "alerts", "issues", "tickets", "reports"}
_VERB_LABELS = {"grants", "covers", "includes", "contains", "requires", "allows", "needs"}
_VERB_NOUNS = {"refresh": "refreshed", "review": "reviewed", "update": "updated"}
_NOUN_VERBS = {"review": "reviews", "approval": "approves"}

# Values.
_NOT_VALUES = {"required", "optional", "mandatory", "recommended", "allowed", "forbidden", "not"}
_CONDITION = re.compile(
    r"^\w+(?:ed|id|en)\s+(?:every|each|once|by|before|after|on|at|in|within|when|if)\b", re.I
)
_CLAUSE = re.compile(r"\b(?:is|are|was|were|cannot|can|must|may|should|will|do|does)\b", re.I)
_PEOPLE = re.compile(
    r"\b(?:employees?|staff|contractors?|engineers?|people|persons?|managers?|teams?|everyone"
    r"|anyone|customers?|users?|members?)\b",
    re.I,
)
_DURATION = re.compile(
    r"^(?:about |up to |at most |at least )?\d[\d,.]*(?:\s*(?:to|-)\s*\d[\d,.]*)?\s+"
    r"(?:business |working |calendar )?(?:second|minute|hour|day|night|week|month|year)s?\b",
    re.I,
)
_WHEN = re.compile(
    r"\b\d{1,2}:\d{2}\b|^(?:within|before|after)\b|^\d+ \w+ (?:before|after)\b"
    r"|\b(?:" + "|".join(sorted(english.DAYS_MONTHS)) + r")\b"
)
_OFTEN = re.compile(
    r"^(?:every|each|once|twice|daily|nightly|weekly|monthly|quarterly|yearly|annually|hourly)\b",
    re.I,
)

# Documents and sections.
_SKIPPED_SECTIONS = re.compile(r"\b(?:templates?|style)\b", re.I)
_DOCUMENT_NOUNS = {
    *("policy", "policies", "guidelines", "guide", "standard", "standards", "handbook"),
    *("plan", "rules", "process", "reference", "glossary", "procedure", "playbook", "manual"),
}
_THING_NOUNS = {
    *("service", "gateway", "page", "warehouse", "pipeline", "portal", "engine", "registry"),
    *("store", "app", "tool", "system", "cluster", "api", "database", "catalog"),
}
_PAGE_SENTENCE = re.compile(
    r"^(?:This|These)\s+(?:page|document|policy|plan|standard|guide|guidelines|handbook|"
    r"register|reference|procedure|rules)\b"
)

# What a label is about: (kind, noun phrase). Kinds: "thing" ("the Invoice Service"),
# "document" ("the Leave Policy"), "topic" ("event streaming"), "row" ("the dev environment"),
# "none" (a sentence's own subject).
Subject = tuple[str, str]


def extract_pairs(passage: Passage) -> list[tuple[str, str]]:
    """(question, answer) pairs from one passage, duplicates removed, in reading order."""
    out: dict[str, tuple[str, str]] = {}
    for block in passage.blocks:
        if block.kind == "code":
            continue
        found = _table(block, passage) if block.kind == "table" else _prose(block, passage)
        for question, raw in found:
            answer = _clean(raw)
            key = question.lower()
            if key not in out and _good_answer(answer):
                out[key] = (question, answer)
    heading = _heading(passage)
    if heading and heading[0].lower() not in out:
        out[heading[0].lower()] = (heading[0], _clean(heading[1]))
    return list(out.values())


def _clean(answer: str) -> str:
    """The answer without trailing punctuation, a leading "that" or an unopened bracket."""
    answer = re.sub(r"^that\s+", "", answer.strip()).rstrip(" .,;:")
    if answer.endswith(")") and "(" not in answer:
        answer = answer[:-1].rstrip(" .,;:")
    return answer


def _good_answer(answer: str) -> bool:
    words = answer.split()
    return 0 < len(words) <= MAX_ANSWER_WORDS and any(c.isalnum() for c in answer)


# --------------------------------------------------------------------------------------------
# Prose: key/value lines and sentences


def _prose(block: Block, passage: Passage) -> Iterator[tuple[str, str]]:
    section = passage.heading_path[-1] if passage.heading_path else ""
    if not _SKIPPED_SECTIONS.search(section):
        subject = _subject(passage)
        for key, value in _key_values(block):
            if _CLAUSE.search(value):
                continue  # "Password history: the last 10 passwords cannot be reused"
            question = _ask(key, value, subject, passage.text)
            if question:
                yield question, value
    for sentence in re.split(r"(?<=[.!?])\s+", _running_text(block)):
        yield from _sentence(sentence.strip(), passage.text)


def _key_values(block: Block) -> list[tuple[str, str]]:
    out = []
    for line in block.text.split("\n"):
        kv = _KEY_VALUE.match(line.strip()) if ": " in line else None
        if kv and _key_value_ok(kv.group(1), kv.group(2)):
            out.append((kv.group(1).strip(), kv.group(2).strip().rstrip(".")))
    return out


def _running_text(block: Block) -> str:
    """The block's prose without its key/value lines, line breaks joined."""
    lines = [line.strip() for line in block.text.split("\n")]
    kept = [line for line in lines if ": " not in line or not _key_values(_line(line))]
    return " ".join(kept)


def _line(text: str) -> Block:
    return Block(kind="paragraph", text=text)


def _key_value_ok(key: str, value: str) -> bool:
    words = key.split()
    if not 1 <= len(words) <= 5 or key.lower() in ("http", "https", "note", "warning", "example"):
        return False
    return len(value.split()) <= 15 and not value.endswith(":") and "://" not in key


def _sentence(sentence: str, context: str = "") -> Iterator[tuple[str, str]]:
    sentence = sentence.rstrip(".!").strip()
    if not sentence or sentence.endswith("?"):
        return
    if "," in sentence or ";" in sentence or " and " in sentence:
        clauses = [c.strip() for c in _CLAUSE_SPLIT.split(sentence) if c.strip()]
    else:
        clauses = [sentence]
    for index, clause in enumerate(clauses):
        if index == 0 or len(clauses) > 1:
            yield from _clause(clause, context)


def _clause(clause: str, context: str) -> Iterator[tuple[str, str]]:
    lowered = f" {clause.lower()} "
    default = _DEFAULTS_TO.match(clause) if " default" in lowered else None
    if default and _term_ok(default.group("term")):
        term = default.group("term").strip()
        value = default.group("value").strip()
        if len(value.split()) <= 8:
            yield f"What is the default {english.soft_lower(term, context)}?", value
        return
    if not any(verb in lowered for verb in (" is ", " are ", " means ", " refers to ")):
        return
    match = _DEFINITION.match(clause)
    if not match:
        return
    article = (match.group("article") or "").lower()
    term = match.group("term").strip()
    verb = match.group("verb").lower()
    rest = match.group("rest").strip()
    if not _term_ok(term) or not rest or _NOT_A_DEFINITION.match(rest):
        return
    lower_elsewhere = rf"(?<![\w./#-]){re.escape(term.lower())}(?![\w-]|\.\w)"
    if article or " " in term or verb != "is" or re.search(lower_elsewhere, context):
        phrase = english.soft_lower(term, context)
    else:
        phrase = term  # "Depot is the analytics warehouse": a bare capitalised word, a name
    phrase = f"{article} {phrase}" if article else phrase
    if verb in ("means", "refers to"):
        if len(rest.split()) <= MAX_ANSWER_WORDS:
            yield f"What does {phrase} {'mean' if verb == 'means' else 'refer to'}?", rest
        return
    if _DEF_START.match(rest):
        # "A runbook is a step-by-step guide ..." ("X is the Y" too): a definition.
        if len(rest.split()) <= MAX_ANSWER_WORDS:
            yield f"What {'are' if verb == 'are' else 'is'} {phrase}?", rest
        return
    if article == "the" and len(rest.split()) <= 6 and not _PASSIVE.match(rest.lower()):
        # "The default branch is main", "The CEO is Ingrid Vos": a fact.
        question = _ask(english.soft_lower(term, context), rest, ("none", ""), context)
        if question and _PERSON.match(rest):
            question = re.sub(r"^What (is|are)", r"Who \1", question)
        if question:
            yield question, rest


def _term_ok(term: str) -> bool:
    words = term.lower().replace("`", "").split()
    if not words or words[0] in _BAD_TERMS or _BAD_TERM_WORDS & set(words):
        return False
    return not words[0].isdigit() and len(term) <= 60


# --------------------------------------------------------------------------------------------
# Tables and pages


def _table(block: Block, passage: Passage) -> Iterator[tuple[str, str]]:
    rows = block.rows
    if len(rows) < 2 or len(rows[0]) < 2:
        return
    header = rows[0]
    entity = english.singular(english.soft_lower(header[0]))
    for row in rows[1:]:
        if len(row) != len(header) or not row[0].strip():
            continue
        named = _row_name(row[0].strip(), entity)
        for column, cell in zip(header[1:], row[1:], strict=False):
            cell = cell.strip()
            if not column.strip() or cell.lower() in EMPTY_CELLS:
                continue
            if len(cell.split()) > MAX_CELL_WORDS:
                continue
            question = _ask(column.strip(), cell, ("row", named), passage.text)
            if question:
                yield question, cell


def _row_name(row: str, entity: str) -> str:
    """How a question names a table row: "the dev environment", "a purchase amount above EUR
    50,000", "a monthly volume of 100 to 499 pallets", or the row's own text."""
    if entity and re.match(r"(?:up to|above|below|over|under|less than|more than)\b", row, re.I):
        return f"{english.article(entity)} {entity} {row[0].lower()}{row[1:]}"
    if entity and len(row.split()) > 1 and re.match(r"(?:[A-Z]{3} )?\d", row):
        return f"{english.article(entity)} {entity} of {row}"
    if entity and entity.lower() not in row.lower() and len(row.split()) <= 4:
        last, first, *rest = [*row.split()[-1:], *entity.split()]
        if last.lower() == first.lower():  # "Values interview" + "interview stage"
            return " ".join(["the", row, *rest])
        return f"the {row} {entity}"
    return row


def _heading(passage: Passage) -> tuple[str, str] | None:
    """What a page covers, from a first sentence that says so ("This page explains ...")."""
    prose = next(
        (t for b in passage.blocks if b.kind == "paragraph" and (t := _running_text(b))), ""
    )
    first = re.split(r"(?<=[.!?])\s+", prose)[0].strip()
    if not _PAGE_SENTENCE.match(first) or not 4 <= len(first.split()) <= 30:
        return None
    kind, noun = _subject(passage)
    title = passage.title or noun
    if kind == "document" or title.lower().endswith(" page"):
        return f"What {english.do(title)} the {title} cover?", first
    return f"What does the {title} page cover?", first


# --------------------------------------------------------------------------------------------
# Labels (key/value lines and table columns) to questions


def _subject(passage: Passage) -> Subject:
    """What the document is about, from its title: a thing, a document or a topic."""
    title = passage.title or (passage.heading_path[0] if passage.heading_path else "")
    title = title or passage.source.rsplit("/", 1)[-1].split(".")[0].replace("-", " ")
    words = title.split()
    last = words[-1].lower() if words else ""
    gerund_phrase = len(words) > 1 and words[1].lower() in ("a", "an", "the")  # Deploying a ...
    if last in _DOCUMENT_NOUNS and not gerund_phrase:
        return "document", f"the {title}"
    if last in _THING_NOUNS and not gerund_phrase:
        return "thing", f"the {title}"
    return "topic", english.soft_lower(title)


def _about(subject: Subject, head: str = "", routed: bool = False, owner: bool = False) -> str:
    """The end of a question naming its subject: " of the Invoice Service", " in the Leave
    Policy", " for event streaming", " for the SEV1 severity"; "" without a subject."""
    kind, phrase = subject
    if not phrase:
        return ""
    if owner:
        prep = "of"
    elif kind == "row":
        prep = "for" if head in _FOR_HEADS or routed else "of"
    elif kind == "document":
        prep = "in"
    else:
        prep = "for" if routed or kind == "topic" else "of"
    return f" {prep} {phrase}"


def _ask(label: str, value: str, subject: Subject, context: str = "") -> str | None:
    """The question a "label: value" pair about `subject` answers; None when there is no
    natural one. `context` (the passage) tells names from common nouns."""
    others = re.sub(rf"{re.escape(label)}\s*[:|]", "", context)  # the passage less this label
    lab = english.soft_lower(label, others)
    if english.names_an_instance(label, others):  # "London hotel limit" beside "Hotel limit: ..."
        lab = f"{label.split()[0]} {lab.split(maxsplit=1)[1]}"
    lab = re.sub(r"\b[Mm]ax\b", "maximum", re.sub(r"\b[Mm]in\b", "minimum", lab))
    low = lab.lower().split()
    if not low or not value.strip():
        return None
    if low[0] in _WH:  # column "Who may access" -> Who may access the Public class?
        return f"{lab[0].upper()}{lab[1:]} {subject[1]}?" if subject[0] == "row" else None
    if low[0] in _MODAL_OR_NOT or value.lower().split()[0] in _NOT_VALUES:
        return None
    if _CONDITION.match(value):  # "Paid every 2 years", "Signed by the CFO": a condition
        return None
    verb = _verb_label(low, value, subject)
    if verb is not None:
        return verb or None
    if english.participle_base(low[-1]) or low[-1] in ("required", "allowed", "needed"):
        return None  # "Review required": a condition, not a thing with a value
    return _noun_label(lab, value, subject)


def _verb_label(low: list[str], value: str, subject: Subject) -> str | None:
    """Questions for labels that are verb phrases ("Requested by", "Used for", "Runs on",
    "Grants", "Draft due", "Review of X"). None: not a verb label; "": one with no question."""
    noun = subject[1]
    if low[-1] == "due":
        if len(low) == 1:  # Due: 15 April -> When is the quarterly report due?
            noun = f"the {noun}" if subject[0] == "topic" else noun
            return f"When {english.be(noun)} {noun} due?" if subject[1] else ""
        return f"When is the {' '.join(low[:-1])} due{_about(subject, 'due')}?"
    if len(low) > 2 and low[0] in _NOUN_VERBS and low[1] in ("of", "for"):
        return f"Who {_NOUN_VERBS[low[0]]} {' '.join(low[2:])}{_about(subject)}?"
    if len(low) == 1 and low[0] in _VERB_LABELS:
        return (
            f"What {english.do(noun)} {noun} {english.verb_of_third_person(low[0])}?"
            if noun
            else ""
        )
    if len(low) != 2 or low[1] not in _PREPOSITIONS:
        return None
    word, prep = low
    base = english.participle_base(word)
    if base:
        if not noun:
            return ""
        if prep == "by":  # Requested by: Customer Support -> Who requests X?
            return f"Who {english.third_person(base)} {noun}?"
        if prep == "for" and _DURATION.match(value):  # Sustained for: 5 minutes
            return f"How long {english.be(noun)} {noun} {word}?"
        return f"What {english.be(noun)} {noun} {word} {prep}?"  # Used for -> What is X used for?
    verb = english.verb_of_third_person(word)
    if verb and prep in ("to", "on", "in", "with", "for"):  # Applies to, Runs on
        if not noun:
            return ""
        wh = "Who" if _PEOPLE.search(value) else "What"
        return f"{wh} {english.do(noun)} {noun} {verb} {prep}?"
    return None


def _noun_label(lab: str, value: str, subject: Subject) -> str:
    """Questions for labels that are noun phrases: the head noun and the value choose between
    Who, Where, How often, How long, When, How many and What."""
    words, low, noun = lab.split(), lab.lower().split(), subject[1]
    cut = next(  # the head noun is the last word before a preposition ("port range for pods")
        (i for i, w in enumerate(low) if i and w in _PREPOSITIONS and low[i:] != ["per", "diem"]),
        len(low),
    )
    head = low[cut - 1]
    if subject[0] != "row" and ((cut < len(low) and subject[0] == "topic") or _covers(low, noun)):
        subject = (subject[0], "")  # "the port range for application pods", "purchasing tool"
    elif cut < len(low) and subject[0] == "thing":
        subject = ("topic", noun)  # "publisher during incidents for the Status Page"
    be = "are" if english.is_plural(head) else "is"
    limit = bool({"maximum", "minimum", "limit"} & set(low))
    about = _about(subject, head)
    if head in _WHO_HEADS and not (head in ("contact", "manager") and re.search(r"[@#/\d]", value)):
        return f"Who {be} the {lab}{_about(subject, head, owner=low == ['owner'])}?"
    if head in _ROUTED and subject[0] != "row" and re.search(r"@|#|on-call|team", value.lower()):
        return f"Where are {lab} sent{_about(subject, routed=True)}?"
    if len(low) == 1 and low[0] in _VERB_NOUNS and noun:  # Refresh: nightly
        often = "often " if _OFTEN.match(value) else ""
        return f"How {often}{english.be(noun)} {noun} {_VERB_NOUNS[low[0]]}?"
    if _OFTEN.match(value):
        return f"How often {be} the {lab}{about}?"
    if head in _DURATION_HEADS | {"retention"} and _DURATION.match(value) and not limit:
        if low in (["length"], ["duration"], ["retention"]) and noun:  # Length: 30 minutes
            return f"How long {english.be(noun)} {noun}{' kept' if head == 'retention' else ''}?"
        short = " ".join(words[:-1]) if head in ("length", "duration") else lab
        return f"How long is the {short}{about}?"
    if _WHEN.search(value) and head not in _NO_WHEN_HEADS and not limit:
        when = words[:-1] if head in ("time", "date", "day") and len(low) > 1 else words
        return f"When {be} the {' '.join(when)}{about}?"
    if re.fullmatch(r"\d+", value) and noun and english.is_plural(head):
        if cut == len(low):  # Partitions: 48
            return f"How many {lab} {english.do(noun)} {noun} have?"
        return f"What is the number of {lab}{about}?"
    if re.fullmatch(r"\d+", value) and noun and len(low) > 1 and low[-1] == "count":
        return f"How many {english.pluralise(' '.join(words[:-1]))} {english.do(noun)} {noun} have?"
    if low == ["meaning"] and noun:
        return f"What does {noun} mean?"
    if low == ["description"] and noun:
        return f"What is {noun} for?"
    if low == ["eligibility"] and noun:
        return f"Who is eligible for {noun}?"
    if head in ("example", "examples"):
        return f"{'What are examples' if head == 'examples' else 'What is an example'}{about}?"
    return f"What {be} the {'default value' if low == ['default'] else lab}{about}?"


def _covers(label: list[str], subject: str) -> bool:
    """Whether the label already names the subject ("purchasing tool" and "purchasing")."""
    wanted = [w[:5] for w in subject.lower().split() if len(w) > 3 and w != "the"]
    return bool(wanted) and all(any(w.startswith(s) for w in label) for s in wanted)
