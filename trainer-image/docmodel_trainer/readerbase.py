"""Train a tiny Llama-architecture base model that can read: given passages and a question in
the product's prompt, it copies the answer span out of the right passage.

    docmodel-trainer reader-base ./reader-base [--steps 9000] [--seed 0]
    python -m docmodel_trainer.readerbase ./reader-base ...

The CPU demo needs a base model whose retrieval answers mean something; a random tiny Llama
only babbles. This builds one from scratch on synthetic reading comprehension:

- documents about fictitious entities (random syllable names, numbers, times, units, team
  names), drawn from large pools, deterministic from the seed, in the shapes of internal docs:
  key/value lines, prose defaults and facts, Markdown table rows, definitions, procedures;
- questions in the shapes of the product's extractive question generator
  (`docmodel_trainer.qa.extractive`) plus a few natural variants, each answered by a span of
  the gold passage;
- the prompt built by `docmodel.retrieval.context_messages` with 1-4 passages (the gold one
  and distractors from other documents, some of them hard negatives that share the asked
  attribute for another entity), rendered with the chat template, the loss on the answer and
  its `<|eot_id|>` only (exactly as `docmodel_trainer.trainset` renders chat examples);
- plain text of the synthetic documents (loss on every token), some followed by
  "Question: ... Answer: ..." lines restating their facts, so the model stays a language model
  and gets a dense copying signal;
- a curriculum from one short passage to four long ones, batches of a fixed token budget (many
  short examples early, fewer long ones late).

The held-out evaluation asks about entities whose names come from a disjoint half of the name
pool, never seen in training, always with four passages. The tokenizer (byte-level BPE, Llama 3
special tokens and chat template) is fitted to synthetic text only, so any text still
tokenises.

Status: not yet a reader, and the demo does not use it. On two CPU cores (about 3.9 steps/s):

- the default recipe (lr 2e-3), stopped after 3,300 of its 9,000 steps (15 minutes): held-out
  exact match 0.000 with four passages and with one (token F1 0.133 at step 1,500, 0.101 at
  3,000; answer loss 2.4 falling to 2.0 nats/token). Its answers have the right shape (a size
  for a size, a step for a step) but are not taken from the passages;
- what it lacks is the copying circuit (heads that find an earlier occurrence of a token and
  copy what followed it). With `--copy-share 0.3` the copy and recall sequences stayed at
  chance loss (7.67 nats, ln 2048 = 7.62) for 2,000 steps. A plain Llama of this size learns
  fixed-length copying (16 sequences of 32 random tokens, repeated) within 250 steps at lr
  1e-3, but not at 2e-3 (still 7.50 after 300 steps), and not on the mixed-length copy and
  recall sequences at 1e-3 (7.42 after 300 steps);
- `--induction-steps 300 --lr 1e-3` (fixed-length copying first) forms the circuit (copy loss
  7.6 to 1.6 by step 300), but the mixed recipe after it erases it again (copy loss back to
  7.07 by step 1,200, exact match still 0.000).

Next to try, on a GPU machine: keep fixed-length copy batches interleaved for the whole run, a
lower learning rate, larger batches, many more steps. `docmodel-reader.json` records each
run's recipe and held-out scores.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import string
import sys
import textwrap
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from docmodel.dataset import Chunk
from docmodel.retrieval import context_messages
from docmodel_trainer.metrics import exact_match, normalize_answer, token_f1
from docmodel_trainer.qa.extractive import _be, _singular, _soft_lower  # the same phrasing
from docmodel_trainer.tinymodel import SPECIAL_TOKENS, fit_tokenizer
from docmodel_trainer.trainset import prompt_and_answer_ids

log = logging.getLogger("docmodel.trainer.readerbase")

IGNORE = -100
RECIPE_FILE = "docmodel-reader.json"

# --------------------------------------------------------------------------------------------
# Word pools

_ONSETS = [
    "b",
    "bl",
    "br",
    "d",
    "dr",
    "f",
    "fl",
    "fr",
    "g",
    "gl",
    "gr",
    "h",
    "j",
    "k",
    "kl",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "pl",
    "pr",
    "qu",
    "r",
    "s",
    "sk",
    "sl",
    "sn",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
    "th",
    "sh",
    "ch",
]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ou", "ie"]
_CODAS = ["", "", "", "", "n", "r", "l", "s", "x", "k", "m", "nd", "st", "rt", "sh", "th"]
HELDOUT_SHARE = 8  # one name in 8 is reserved for the held-out evaluation


def _heldout_word(word: str) -> bool:
    return zlib.crc32(word.encode()) % HELDOUT_SHARE == 0


AREAS = [
    "Platform",
    "Payments",
    "Data",
    "Identity",
    "Storage",
    "Networking",
    "Search",
    "Mobile",
    "Growth",
    "Infrastructure",
    "Security",
    "Reliability",
    "Analytics",
    "Compliance",
    "Finance",
    "Logistics",
    "Routing",
    "Pricing",
    "Fleet",
    "Customs",
    "Warehouse",
    "Messaging",
    "Integrations",
    "Procurement",
    "Treasury",
    "Tooling",
    "Research",
    "Support",
    "Legal",
]
DEPARTMENTS = [
    "platform",
    "billing",
    "data",
    "handbook",
    "hr",
    "security",
    "support",
    "ops",
    "finance",
    "legal",
    "infra",
    "sre",
    "research",
    "sales",
    "product",
    "logistics",
    "compliance",
    "it",
]
EXTENSIONS = ["md", "md", "md", "txt", "html", "pdf"]
LANGUAGES = [
    "Go",
    "Rust",
    "Python",
    "Java",
    "Scala",
    "Elixir",
    "TypeScript",
    "C#",
    "Ruby",
    "Haskell",
    "Clojure",
    "Erlang",
    "Swift",
    "OCaml",
    "Zig",
    "C++",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DIRECTIONS = ["north", "south", "east", "west", "central"]
DURATION_UNITS = ["seconds", "minutes", "hours", "days", "weeks", "months", "years"]
SIZE_UNITS = ["KiB", "MiB", "GiB", "TiB", "MB", "GB"]
TIMEZONES = ["UTC", "UTC", "CET", "Central European Time", "Eastern Time", "local time"]
ENVIRONMENTS = [
    "dev",
    "test",
    "qa",
    "staging",
    "preprod",
    "production",
    "sandbox",
    "perf",
    "demo",
    "canary",
]

# Value kinds: what a value of an attribute looks like.
KV_ATTRIBUTES: list[tuple[str, str]] = [
    ("owner", "team"),
    ("maintainer", "person"),
    ("language", "lang"),
    ("database", "tool"),
    ("repository", "repo"),
    ("team channel", "channel"),
    ("support channel", "channel"),
    ("alert channel", "channel"),
    ("request queue", "email"),
    ("support email", "email"),
    ("escalation contact", "team"),
    ("approver", "role"),
    ("reviewer", "role"),
    ("region", "region"),
    ("primary region", "region"),
    ("fallback region", "region"),
    ("cluster", "cluster"),
    ("deploy target", "cluster"),
    ("health endpoint", "path"),
    ("status endpoint", "path"),
    ("runtime", "tool"),
    ("message broker", "tool"),
    ("cache", "tool"),
    ("dashboard", "tool"),
    ("paging tool", "tool"),
    ("build tool", "tool"),
    ("ticket prefix", "code"),
    ("cost center", "code"),
    ("retention", "duration"),
    ("timeout", "duration"),
    ("grace period", "duration"),
    ("response time", "duration"),
    ("rotation length", "duration"),
    ("review cadence", "freq"),
    ("maximum batch size", "size"),
    ("rate limit", "rate"),
    ("storage quota", "size"),
    ("port", "port"),
    ("current version", "version"),
    ("release day", "day"),
    ("maintenance window", "time"),
    ("backup schedule", "time"),
    ("data classification", "class"),
    ("primary contact", "person"),
    ("secondary contact", "person"),
    ("sponsor", "person"),
    ("budget owner", "person"),
    ("service level", "level"),
    ("error threshold", "percent"),
    ("replica count", "number"),
    ("log index", "index"),
    ("queue name", "index"),
    ("office", "place"),
    ("storage", "tool"),
    ("purpose", "phrase"),
    ("description", "phrase"),
    ("meaning", "phrase"),
    ("default", "number"),
]
# Heads of composed attribute names ("export window", "vornex quota") and their value kinds.
ATTRIBUTE_HEADS: list[tuple[str, str]] = [
    ("limit", "number"),
    ("window", "duration"),
    ("owner", "team"),
    ("contact", "person"),
    ("queue", "email"),
    ("channel", "channel"),
    ("timeout", "duration"),
    ("quota", "size"),
    ("level", "level"),
    ("code", "code"),
    ("target", "percent"),
    ("schedule", "time"),
    ("endpoint", "path"),
    ("version", "version"),
    ("region", "region"),
    ("interval", "duration"),
    ("period", "duration"),
    ("budget", "number"),
    ("threshold", "percent"),
    ("approver", "role"),
    ("tool", "tool"),
    ("lifetime", "duration"),
    ("delay", "duration"),
    ("size", "size"),
    ("rate", "rate"),
    ("day", "day"),
]
ATTRIBUTE_MODIFIERS = [
    "retry",
    "export",
    "sync",
    "import",
    "audit",
    "upload",
    "session",
    "login",
    "cleanup",
    "archive",
    "build",
    "release",
    "incident",
    "payout",
    "refund",
    "shipping",
    "token",
    "cache",
    "queue",
    "batch",
    "snapshot",
    "report",
    "alert",
    "webhook",
    "invoice",
    "dispatch",
    "booking",
    "sweep",
    "rollover",
    "quarantine",
    "handover",
    "intake",
    "failover",
    "replay",
]
TABLE_ROW_KINDS = [
    "environment",
    "key",
    "job",
    "queue",
    "role",
    "severity",
    "data",
    "tool",
    "service",
    "team",
    "region",
    "plan",
    "alert",
    "endpoint",
]
NOUNS = [
    "request",
    "record",
    "report",
    "batch",
    "export",
    "ticket",
    "job",
    "snapshot",
    "message",
    "event",
    "invoice",
    "shipment",
    "payment",
    "order",
    "account",
    "token",
    "session",
    "build",
    "release",
    "backup",
    "alert",
    "dashboard",
    "queue",
    "pipeline",
    "schema",
    "index",
    "bucket",
    "manifest",
    "contract",
    "route",
    "parcel",
    "pallet",
    "carrier",
    "customer",
    "vendor",
    "partner",
    "device",
    "node",
]
VERBS = [
    "collects",
    "validates",
    "exports",
    "archives",
    "routes",
    "schedules",
    "signs",
    "encrypts",
    "replays",
    "tracks",
    "publishes",
    "merges",
    "reconciles",
    "rotates",
    "stores",
    "indexes",
    "approves",
    "forwards",
    "bundles",
    "audits",
]
ADJECTIVES = [
    "nightly",
    "weekly",
    "internal",
    "external",
    "pending",
    "failed",
    "archived",
    "regional",
    "shared",
    "primary",
    "temporary",
    "signed",
    "encrypted",
    "partial",
    "manual",
    "automatic",
    "critical",
    "duplicate",
    "stale",
]
PLURALS = [
    "exports",
    "backups",
    "syncs",
    "reports",
    "rollups",
    "audits",
    "sweeps",
    "snapshots",
    "imports",
    "payouts",
]
SECTION_HEADINGS = [
    "Overview",
    "Rotation",
    "Schedule",
    "Limits",
    "Escalation",
    "Backups",
    "Retention Periods",
    "Access Reviews",
    "Keys",
    "Environments",
    "Deployment",
    "Alerts",
    "Ownership",
    "Costs",
    "Quotas",
    "Maintenance",
    "Support Hours",
    "Data Flow",
    "Dependencies",
    "Failover",
    "Releases",
    "Incidents",
    "Reporting",
    "Storage",
    "Capacity",
    "Networking",
    "Contacts",
    "Configuration",
    "Monitoring",
    "Scaling",
    "Archiving",
    "Runbook",
    "Approvals",
    "Terms",
    "Definitions",
    "Jobs",
    "Queues",
    "Roles",
    "Severities",
    "Plans",
    "Endpoints",
    "Timeouts",
    "Defaults",
    "Exports",
    "Audits",
]
DOC_SUFFIXES = [
    "Service",
    "Gateway",
    "Pipeline",
    "API",
    "Scheduler",
    "Portal",
    "Worker",
    "Registry",
    "Platform",
    "Agent",
]
POLICY_SUFFIXES = ["Policy", "Handbook", "Guide", "Standard", "Playbook", "Runbook", "Reference"]

INSTRUCTION_QUESTION = "Question: "
PLAIN_QUESTION, PLAIN_ANSWER = "Question: ", "Answer: "


def _cap(word: str) -> str:
    return word[:1].upper() + word[1:]


def _a(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def _plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "sh", "ch")):
        return word + "es"
    return word + "s"


# --------------------------------------------------------------------------------------------
# Synthetic documents


@dataclass
class QA:
    question: str
    answer: str
    kind: str  # what the question asks: kv_title, kv_section, table, default, ...
    key: str = ""  # a phrase no distractor may contain (the question would be ambiguous)


@dataclass
class Section:
    heading_path: list[str]
    text: str
    kind: str
    qas: list[QA] = field(default_factory=list)
    schema: Any = None  # what a hard negative shares with this section


@dataclass
class DocContext:
    source: str
    title: str
    entity: str  # lower-case name the prose uses ("vornex")
    thing: str  # "the vornex service"
    sections_used: set[str] = field(default_factory=set)


@dataclass
class Example:
    question: str
    answer: str
    kind: str
    passages: list[Chunk]
    gold: int
    hard: int
    # Further questions on the same passages, each answerable from exactly one of them: asked
    # as follow-up turns in training (more answers per sequence), never in evaluation.
    more: list[QA] = field(default_factory=list)


class World:
    """Random names and values from one half of the pools (training or held-out)."""

    def __init__(self, rng: random.Random, heldout: bool):
        self.rng = rng
        self.heldout = heldout

    # names ----------------------------------------------------------------------------------
    def word(self, syllables: int | None = None) -> str:
        r = self.rng
        while True:
            n = syllables or r.choice((2, 2, 2, 3))
            parts = []
            for i in range(n):
                coda = r.choice(_CODAS) if i == n - 1 or r.random() < 0.3 else ""
                parts.append(r.choice(_ONSETS) + r.choice(_VOWELS) + coda)
            word = "".join(parts)
            if 4 <= len(word) <= 11 and _heldout_word(word) == self.heldout:
                return word

    def english_or_word(self, pool: Sequence[str], p_word: float = 0.4) -> str:
        return self.word() if self.rng.random() < p_word else self.rng.choice(pool)

    def attribute(self) -> tuple[str, str]:
        """(name, value kind): a common one, or composed ("export window", "vornex quota")."""
        r = self.rng.random()
        if r < 0.5:
            return self.rng.choice(KV_ATTRIBUTES)
        head, kind = self.rng.choice(ATTRIBUTE_HEADS)
        return f"{self.english_or_word(ATTRIBUTE_MODIFIERS, 0.5)} {head}", kind

    # values ---------------------------------------------------------------------------------
    def number(self, low: int = 1, high: int = 99) -> int:
        return self.rng.randint(low, high)

    def clock(self) -> str:
        return (
            f"{self.rng.randint(0, 23):02d}:{self.rng.choice((0, 15, 30, 45, 5, 10, 20, 40)):02d}"
        )

    def value(self, kind: str) -> str:
        r, w = self.rng, self.word
        if kind == "team":
            return r.choice(
                (
                    f"{_cap(w())} {r.choice(AREAS)} team",
                    f"{r.choice(AREAS)} {_cap(w())} team",
                    f"{_cap(w())} team",
                    f"the {_cap(w())} {r.choice(AREAS)} group",
                )
            )
        if kind == "person":
            return f"{_cap(w())} {_cap(w())}"
        if kind == "role":
            return r.choice(
                (
                    f"Head of {_cap(w())}",
                    f"{_cap(w())} lead",
                    f"{r.choice(AREAS)} lead",
                    f"the {w()} {r.choice(('manager', 'controller', 'owner', 'lead'))}",
                    f"Director of {r.choice(AREAS)}",
                )
            )
        if kind == "duration":
            unit = r.choice(DURATION_UNITS)
            n = self.number(1, 60 if unit in ("seconds", "minutes") else 36)
            return f"{n} {unit[:-1] if n == 1 else unit}"
        if kind == "size":
            return (
                f"{r.choice((self.number(1, 999), 2 ** r.randint(2, 10)))} {r.choice(SIZE_UNITS)}"
            )
        if kind == "rate":
            per = r.choice(("second", "minute", "hour", "day"))
            thing = r.choice(("requests", "jobs", "messages", "calls", "uploads", w() + "s"))
            return f"{self.number(2, 5000)} {thing} per {per}"
        if kind == "percent":
            pct = r.choice((str(self.number(1, 99)), f"{self.number(90, 99)}.{self.number(1, 9)}"))
            return f"{pct} percent" if r.random() < 0.5 else f"{pct}%"
        if kind == "time":
            return r.choice(
                (
                    f"{self.clock()} {r.choice(TIMEZONES)}",
                    f"every {r.choice(DAYS)} at {self.clock()}",
                    f"{r.choice(DAYS)} at {self.clock()}",
                    f"daily at {self.clock()} {r.choice(TIMEZONES)}",
                )
            )
        if kind == "freq":
            return r.choice(
                (
                    f"every {self.number(2, 12)} {r.choice(('days', 'weeks', 'months'))}",
                    f"once per {r.choice(('week', 'month', 'quarter', 'year', 'sprint'))}",
                    f"twice a {r.choice(('week', 'month', 'year'))}",
                    f"every {r.choice(DAYS)}",
                )
            )
        if kind == "tool":
            return r.choice(
                (_cap(w()), f"{_cap(w())} {self.number(2, 24)}", f"{_cap(w())}{_cap(w(2))}")
            )
        if kind == "lang":
            return r.choice(LANGUAGES)
        if kind == "repo":
            return f"{w()}/{w()}-{r.choice([*NOUNS, w()])}"
        if kind == "channel":
            return f"#{w()}-{r.choice((w(), r.choice(NOUNS), 'alerts', 'ops', 'help'))}"
        if kind == "email":
            return f"{r.choice((w(), r.choice(NOUNS), 'help', 'ops'))}@{w()}.example"
        if kind == "region":
            return f"{w()[:4]}-{r.choice(DIRECTIONS)}-{self.number(1, 9)}"
        if kind == "cluster":
            return f"{r.choice(('kube', 'k8s', 'nomad', 'ecs', w()[:4]))}-{w()[:3]}-{self.number(1, 12)}"
        if kind == "path":
            return r.choice(
                (f"/{w()}", f"/{w()}/{r.choice(NOUNS)}", f"/v{self.number(1, 4)}/{w()}")
            )
        if kind == "number":
            return str(
                r.choice((self.number(1, 20), self.number(10, 999), self.number(1000, 9999)))
            )
        if kind == "port":
            return str(self.number(1024, 65000))
        if kind == "code":
            letters = "".join(r.choice(string.ascii_uppercase) for _ in range(r.randint(2, 4)))
            return f"{letters}-{self.number(1, 999)}"
        if kind == "version":
            return r.choice(
                (
                    f"{self.number(1, 19)}.{self.number(0, 30)}.{self.number(0, 9)}",
                    f"v{self.number(1, 9)}.{self.number(0, 20)}",
                )
            )
        if kind == "day":
            return r.choice((r.choice(DAYS), f"every {r.choice(DAYS)}"))
        if kind == "class":
            return r.choice(("confidential", "internal", "restricted", "public", "secret")) + (
                f" ({w()})" if r.random() < 0.3 else ""
            )
        if kind == "level":
            return f"{r.choice(('Tier', 'Level', 'Class', 'Band', 'Gold', 'Silver'))} {self.number(1, 5)}"
        if kind == "index":
            return f"{w()}-{r.choice(NOUNS)}-{r.choice(('v1', 'v2', 'prod', 'main', str(self.number(1, 9))))}"
        if kind == "place":
            return f"{_cap(w())} {r.choice(('House', 'Tower', 'Campus', 'Office', 'Hub'))}, floor {self.number(1, 12)}"
        if kind == "phrase":
            return self.phrase()
        raise ValueError(kind)

    def phrase(self) -> str:
        """A short description, 3-8 words ("Pods running the vornex queue")."""
        r, w = self.rng, self.word
        return r.choice(
            (
                f"{_cap(_plural(r.choice(NOUNS)))} {r.choice(VERBS)[:-1]}ing the {w()} {r.choice(NOUNS)}",
                f"{_cap(r.choice(ADJECTIVES))} {r.choice(NOUNS)} for {w()} {_plural(r.choice(NOUNS))}",
                f"{_cap(r.choice(VERBS))} {_plural(r.choice(NOUNS))} from {_cap(w())}",
                f"Upper bound for the {w()} {r.choice(NOUNS)}",
                f"{_cap(r.choice(NOUNS))} {r.choice(('id', 'count', 'size', 'owner'))} of the {w()} {r.choice(NOUNS)}",
            )
        )

    def definition(self) -> str:
        """The body of a definition ("a ticket that blocks the nightly vornex export")."""
        r, w = self.rng, self.word
        noun, noun2 = r.choice(NOUNS), r.choice(NOUNS)
        return r.choice(
            (
                f"{_a(noun)} that {r.choice(VERBS)} {r.choice(ADJECTIVES)} {w()} {_plural(noun2)}",
                f"the {r.choice(ADJECTIVES)} {noun} for {_plural(noun2)} sent to {_cap(w())}",
                f"{_a(r.choice(ADJECTIVES))} {noun} used to {r.choice(VERBS)[:-1]} {_plural(noun2)} before the {w()} run",
                f"the {noun} a {w()} {noun2} gets when it {r.choice(VERBS)} {_plural(r.choice(NOUNS))}",
                f"an {r.choice(('internal', 'external', 'emergency', 'optional'))} {noun} that {r.choice(VERBS)} every {noun2} of the {w()} team",
            )
        )

    def filler(self, ctx: DocContext) -> str:
        """A sentence of context that answers nothing."""
        r, w = self.rng, self.word
        return r.choice(
            (
                f"Requests from the {w()} portal are routed through {ctx.thing}.",
                f"{_cap(_plural(r.choice(NOUNS)))} older than a week are moved to {_cap(w())}.",
                f"Changes to {ctx.thing} need a review from a second engineer.",
                f"Every {r.choice(NOUNS)} is {r.choice(VERBS)[:-1]}ed before it reaches {_cap(w())}.",
                f"Questions go to the {r.choice(AREAS)} team in {self.value('channel')}.",
                f"{_cap(ctx.thing)} {r.choice(VERBS)} {r.choice(ADJECTIVES)} {_plural(r.choice(NOUNS))} for {_cap(w())}.",
                f"Most {_plural(r.choice(NOUNS))} finish within a few {r.choice(('seconds', 'minutes', 'hours'))}.",
                f"The {w()} dashboard shows every {r.choice(ADJECTIVES)} {r.choice(NOUNS)}.",
                f"Teams that depend on {ctx.thing} should subscribe to its release notes.",
                f"{_cap(w())} replaced the old {r.choice(NOUNS)} store in {self.number(2015, 2025)}.",
            )
        )

    # documents ------------------------------------------------------------------------------
    def doc(self) -> DocContext:
        r = self.rng
        entity = self.word()
        if r.random() < 0.65:
            suffix = r.choice(DOC_SUFFIXES)
            title = f"{_cap(entity)} {suffix}"
            thing = f"the {entity} {suffix.lower() if suffix != 'API' else 'API'}"
        else:
            topic = r.choice([*AREAS, _cap(self.word())])
            title = f"{_cap(entity)} {topic} {r.choice(POLICY_SUFFIXES)}"
            thing = f"the {entity} {topic.lower()} process"
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        source = f"{r.choice(DEPARTMENTS)}/{slug}.{r.choice(EXTENSIONS)}"
        return DocContext(source=source, title=title, entity=entity, thing=thing)

    def heading(self, ctx: DocContext) -> str:
        r = self.rng
        for _ in range(10):
            h = (
                r.choice(SECTION_HEADINGS)
                if r.random() < 0.7
                else f"{_cap(self.word())} {r.choice(SECTION_HEADINGS)}"
            )
            if h not in ctx.sections_used:
                ctx.sections_used.add(h)
                return h
        return f"{_cap(self.word())} Notes"

    def wrap(self, text: str) -> str:
        """Prose as documents hold it: sometimes hard-wrapped near 90 characters."""
        if self.rng.random() < 0.5:
            return "\n".join(textwrap.wrap(text, width=self.rng.randint(80, 96)))
        return text


# Section builders: (world, doc, richness in [0, 1], schema of a hard negative or None).


def _cover_qa(ctx: DocContext, heading_path: list[str], first: str) -> QA | None:
    if not 4 <= len(first.split()) <= 30 or first.endswith(":"):
        return None
    section = heading_path[-1]
    if len(heading_path) == 1:
        return QA(f"What does the {section} page cover?", first, "cover")
    return QA(f'What does the "{section}" section of {ctx.title} cover?', first, "cover")


def _intro_sentence(w: World, ctx: DocContext) -> str:
    r = w.rng
    noun = r.choice(NOUNS)
    return r.choice(
        (
            f"{_cap(ctx.thing)} {r.choice(VERBS)} {_plural(noun)} from {_cap(w.word())} and {r.choice(VERBS)} them for the {w.word()} team.",
            f"This page describes {ctx.thing}, which {r.choice(VERBS)} {r.choice(ADJECTIVES)} {_plural(noun)}.",
            f"{_cap(ctx.thing)} is how {_cap(w.word())} {r.choice(VERBS)} {_plural(noun)} across regions.",
            f"This guide covers {ctx.thing}: {_plural(noun)}, {_plural(r.choice(NOUNS))} and the people who run it.",
            f"{_cap(ctx.thing)} keeps {r.choice(ADJECTIVES)} {_plural(noun)} only as long as the {w.word()} rules require.",
        )
    )


def _kv_lines(
    w: World, richness: float, keys: list[tuple[str, str]] | None
) -> list[tuple[str, str, str]]:
    r = w.rng
    if keys is None:
        n = r.randint(1, 2 + round(3 * richness))
        keys, seen = [], set()
        while len(keys) < n:
            name, kind = w.attribute()
            if name not in seen:
                seen.add(name)
                keys.append((name, kind))
    else:
        keys = list(keys)
        r.shuffle(keys)
    return [(name, kind, w.value(kind)) for name, kind in keys]


def section_kv(w: World, ctx: DocContext, richness: float, schema: Any = None) -> Section:
    """Prose then "Key: value" lines; the intro section (heading = title) or a sub-section."""
    r = w.rng
    intro = schema["intro"] if schema else r.random() < 0.4
    heading_path = (
        [ctx.title] if intro else [ctx.title, schema["heading"] if schema else w.heading(ctx)]
    )
    lines = _kv_lines(w, richness, schema["keys"] if schema else None)
    prose = [_intro_sentence(w, ctx)] if intro or r.random() < 0.7 else []
    prose += [w.filler(ctx) for _ in range(r.randint(0, round(2 * richness)))]
    bullet = r.choice(("", "", "", "- "))
    kv_text = "\n".join(f"{bullet}{_cap(name)}: {value}" for name, _, value in lines)
    blank = "\n\n" if r.random() < 0.7 else "\n"
    if bullet == "- ":
        blank = "\n\n"
    text = (w.wrap(" ".join(prose)) + blank + kv_text) if prose else kv_text
    if r.random() < 0.25 and prose:
        text = kv_text + "\n\n" + w.wrap(" ".join(prose))
    qas = []
    for name, _, value in lines:
        key = _soft_lower(_cap(name))
        if intro:
            qas.append(QA(f"What {_be(name)} the {key} of {ctx.title}?", value, "kv_title"))
        else:
            section = heading_path[-1]
            qas.append(
                QA(
                    f'What {_be(name)} the {key} in the "{section}" section of {ctx.title}?',
                    value,
                    "kv_section",
                )
            )
        # natural variants about the thing the page describes
        if name == "owner":
            qas.append(
                QA(
                    r.choice((f"Who owns {ctx.thing}?", f"Which team owns {ctx.thing}?")),
                    value,
                    "kv_natural",
                )
            )
        elif intro:
            qas.append(QA(f"What {_be(name)} the {key} of {ctx.thing}?", value, "kv_natural"))
    if prose:
        cover = _cover_qa(ctx, heading_path, prose[0])
        if cover:
            qas.append(cover)
    schema_out = {
        "intro": intro,
        "heading": heading_path[-1],
        "keys": [(n, k) for n, k, _ in lines],
    }
    return Section(heading_path, text, "kv", qas, schema_out)


def _fact_attribute(w: World, ctx: DocContext, head: tuple[str, str] | None) -> tuple[str, str]:
    r = w.rng
    name, kind = head if head else r.choice(ATTRIBUTE_HEADS)
    mod = w.english_or_word(ATTRIBUTE_MODIFIERS, 0.4)
    if r.random() < 0.35:
        mod = f"{ctx.entity} {mod}"
    return f"{mod} {name}", kind


def section_facts(w: World, ctx: DocContext, richness: float, schema: Any = None) -> Section:
    """Prose with defaults and facts: "The default export window is 45 minutes." """
    r = w.rng
    heading_path = [ctx.title, schema["heading"] if schema and r.random() < 0.5 else w.heading(ctx)]
    heads = (
        schema["heads"]
        if schema
        else [r.choice(ATTRIBUTE_HEADS) for _ in range(r.randint(1, 2 + round(2 * richness)))]
    )
    sentences: list[str] = []
    qas: list[QA] = []
    for head in heads:
        attr, kind = _fact_attribute(w, ctx, head)
        value = w.value(kind)
        if len(value.split()) > 6:
            value = w.value("number")
        shape = r.random()
        if shape < 0.4:
            sentences.append(f"The default {attr} is {value}.")
            qas.append(
                QA(f"What is the default {_soft_lower(attr)}?", value, "default", f"default {attr}")
            )
        elif shape < 0.6:
            sentences.append(f"{_cap(attr)} defaults to {value}.")
            qas.append(QA(f"What is the default {_soft_lower(attr)}?", value, "default", attr))
        elif shape < 0.75:
            word = r.choice(("maximum", "minimum"))
            sentences.append(f"The {word} {attr} is {value}.")
            qas.append(
                QA(f"What is the {word} {_soft_lower(attr)}?", value, "fact", f"{word} {attr}")
            )
        else:
            sentences.append(f"The {attr} is {value}.")
            qas.append(QA(f"What is the {_soft_lower(attr)}?", value, "fact", f"the {attr} is"))
    if r.random() < 0.5 + 0.3 * richness:
        things = f"{_cap(w.word())} {r.choice(PLURALS)}"
        when = w.value("time")
        if not when.startswith(("every", "daily")):
            when = f"every {r.choice(DAYS)} at {w.clock()}"
        sentences.append(f"{things} run {when}.")
        qas.append(QA(f"When do {things} run?", when, "natural", things.lower() + " run"))
    if r.random() < 0.3 + 0.3 * richness:
        things = f"{_cap(w.word())} {_plural(r.choice(NOUNS))}"
        duration = w.value("duration")
        sentences.append(f"{things} must be completed within {duration}.")
        qas.append(
            QA(
                f"How quickly must {_soft_lower(things)} be completed?",
                f"within {duration}",
                "natural",
                things.lower() + " must",
            )
        )
    r.shuffle(sentences)
    fillers = [w.filler(ctx) for _ in range(r.randint(0, 1 + round(2 * richness)))]
    for f in fillers:
        sentences.insert(r.randint(0, len(sentences)), f)
    text = w.wrap(" ".join(sentences))
    cover = _cover_qa(ctx, heading_path, sentences[0])
    if cover:
        qas.append(cover)
    return Section(heading_path, text, "facts", qas, {"heading": heading_path[-1], "heads": heads})


def _row_subject(w: World, kind: str) -> str:
    r = w.rng
    word = w.word()
    if kind == "environment":
        return r.choice((r.choice(ENVIRONMENTS), word, f"{word}-{r.choice(ENVIRONMENTS)}"))
    if kind == "key":
        return f"{word}{_cap(r.choice(ATTRIBUTE_HEADS)[0])}"
    if kind == "job":
        return f"{word}-{r.choice(('sync', 'export', 'cleanup', 'import', 'rollup', 'sweep'))}"
    if kind == "queue":
        return f"{word}.{r.choice(NOUNS)}"
    if kind == "role":
        return f"{word}-{r.choice(('admin', 'reader', 'ops', 'editor', 'auditor'))}"
    if kind == "severity":
        return f"{r.choice(('P', 'S', 'Level ', 'Sev-'))}{r.randint(0, 5)} {_cap(word)}"
    if kind == "data":
        return f"{_cap(word)} {_plural(r.choice(NOUNS))}"
    if kind == "region":
        return w.value("region")
    if kind == "plan":
        return f"{_cap(word)} {r.choice(('Basic', 'Plus', 'Pro', 'Enterprise', 'Lite'))}"
    if kind == "alert":
        return f"{_cap(word)}{_cap(r.choice(NOUNS))}{r.choice(('High', 'Down', 'Stuck', 'Slow'))}"
    if kind == "endpoint":
        return w.value("path")
    return _cap(word) if r.random() < 0.5 else word


def section_table(w: World, ctx: DocContext, richness: float, schema: Any = None) -> Section:
    """A Markdown table as chunks hold it: header row first, then one row per entity."""
    r = w.rng
    if schema:
        row_kind, columns = schema["row_kind"], schema["columns"]
        heading = schema["heading"] if r.random() < 0.5 else w.heading(ctx)
    else:
        row_kind = r.choice(TABLE_ROW_KINDS)
        columns, seen = [], set()
        while len(columns) < r.randint(2, 3):
            name, kind = w.attribute() if r.random() < 0.7 else r.choice(KV_ATTRIBUTES)
            if name not in seen and len(name.split()) <= 3:
                seen.add(name)
                columns.append((name, kind))
        heading = w.heading(ctx)
    n_rows = r.randint(2, 2 + round(4 * richness))
    rows: list[list[str]] = []
    subjects: set[str] = set()
    while len(rows) < n_rows:
        subject = _row_subject(w, row_kind)
        if subject.lower() in subjects:
            continue
        subjects.add(subject.lower())
        rows.append([subject] + [w.value(kind) for _, kind in columns])
    header = [_cap(row_kind)] + [_cap(name) for name, _ in columns]
    text = "\n".join("| " + " | ".join(row) + " |" for row in [header, *rows])
    heading_path = [ctx.title, heading]
    entity = _singular(_soft_lower(header[0]))
    qas = []
    for row in rows:
        subject = row[0]
        named = (
            f"the {subject} {entity}"
            if entity.lower() not in subject.lower() and len(subject.split()) <= 4
            else subject
        )
        for (col, kind), cell in zip(columns, row[1:], strict=True):
            question = f"What {_be(col)} the {_soft_lower(_cap(col))} of {named}?"
            if r.random() < 0.15:
                verb = "serves" if kind in ("cluster", "region") else "does"
                question = (
                    f"Which {_soft_lower(_cap(col))} serves {named}?"
                    if verb == "serves"
                    else f"Which {_soft_lower(_cap(col))} does {named} use?"
                )
            qas.append(QA(question, cell, "table", f"| {subject.lower()} |"))
    return Section(
        heading_path,
        text,
        "table",
        qas,
        {"row_kind": row_kind, "columns": columns, "heading": heading},
    )


def section_definitions(w: World, ctx: DocContext, richness: float, schema: Any = None) -> Section:
    """Glossary lines: "A hold code is ...", "Drift window means ..."."""
    r = w.rng
    heading_path = [ctx.title, r.choice(("Terms", "Definitions", "Glossary", w.heading(ctx)))]
    heads = (
        schema["heads"]
        if schema
        else [
            r.choice(NOUNS + [h for h, _ in ATTRIBUTE_HEADS])
            for _ in range(r.randint(1, 2 + round(3 * richness)))
        ]
    )
    lines, qas = [], []
    for head in heads:
        term = f"{w.english_or_word(ATTRIBUTE_MODIFIERS, 0.6)} {head}"
        body = w.definition()
        shape = r.random()
        if shape < 0.45:
            article = "An" if term[0] in "aeiou" else "A"
            lines.append(f"{article} {term} is {body}.")
            qas.append(QA(f"What is {article.lower()} {term}?", body, "definition", f"{term} is"))
        elif shape < 0.75:
            lines.append(f"{_cap(term)} means {body}.")
            qas.append(QA(f"What does {term} mean?", body, "definition", f"{term} means"))
        else:
            lines.append(f"The {term} is {body}.")
            qas.append(QA(f"What is the {term}?", body, "definition", f"{term} is"))
    sep = r.choice(("\n\n", "\n", " "))
    text = sep.join(w.wrap(line) if sep != " " else line for line in lines)
    if sep == " ":
        text = w.wrap(text)
    if r.random() < 0.3:
        intro = f"Terms used across the {ctx.entity} documentation."
        text = intro + "\n\n" + text
    cover = _cover_qa(ctx, heading_path, lines[0])
    if cover:
        qas.append(cover)
    return Section(heading_path, text, "definitions", qas, {"heads": heads})


def section_procedure(w: World, ctx: DocContext, richness: float, schema: Any = None) -> Section:
    """A numbered procedure with its purpose first."""
    r = w.rng
    heading_path = [ctx.title, w.heading(ctx)]
    tool = f"{ctx.entity}ctl" if r.random() < 0.5 else f"{w.word()}ctl"
    noun = r.choice(NOUNS)
    first = f"This procedure {r.choice(VERBS)} the {r.choice(ADJECTIVES)} {_plural(noun)} of {ctx.thing}."
    steps = [
        f"Run {tool} {r.choice(('drain', 'sync', 'rotate', 'export', 'pause', 'restore'))} --{r.choice(('env', 'zone', 'region', 'queue'))} {w.word()}",
        f"Wait until every {noun} reports {r.choice(('Ready', 'Idle', 'Synced', 'Done'))}",
        f"Post a note in {w.value('channel')}",
        f"Ask the {r.choice(AREAS)} on-call to confirm the {r.choice(NOUNS)} count",
        f"Close the {w.value('code')} ticket",
    ]
    steps = steps[: r.randint(2, 2 + round(3 * richness))]
    text = w.wrap(first) + "\n\n" + "\n".join(f"{i}. {s}." for i, s in enumerate(steps, start=1))
    qas = []
    ordinals = ("first", "second", "third", "fourth", "fifth")
    section = heading_path[-1]
    for i, s in enumerate(steps):
        qas.append(
            QA(
                f'What is the {ordinals[i]} step in the "{section}" section of {ctx.title}?',
                s,
                "procedure",
            )
        )
    cover = _cover_qa(ctx, heading_path, first)
    if cover:
        qas.append(cover)
    return Section(heading_path, text, "procedure", qas, None)


SECTION_BUILDERS = {
    "kv": section_kv,
    "facts": section_facts,
    "table": section_table,
    "definitions": section_definitions,
    "procedure": section_procedure,
}
# How often each kind of section holds the asked question (distractors draw uniformly).
GOLD_WEIGHTS = {"kv": 0.34, "facts": 0.22, "table": 0.24, "definitions": 0.13, "procedure": 0.07}
COVER_SHARE = 0.12  # of questions, the "What does the X section cover?" shape


def build_document(
    w: World, richness: float = 1.0, others: tuple[int, int] = (2, 4)
) -> tuple[DocContext, list[Section]]:
    """A whole synthetic document: an intro section then `others` more."""
    ctx = w.doc()
    sections = [_intro(w, ctx, richness)]
    for _ in range(w.rng.randint(*others)):
        kind = w.rng.choice(list(SECTION_BUILDERS))
        sections.append(SECTION_BUILDERS[kind](w, ctx, richness))
    return ctx, sections


def _intro(w: World, ctx: DocContext, richness: float) -> Section:
    schema = {"intro": True, "heading": ctx.title, "keys": None}
    lines = _kv_lines(w, richness, None)
    schema["keys"] = [(n, k) for n, k, _ in lines]
    return section_kv(w, ctx, richness, schema)


def render_document(ctx: DocContext, sections: Sequence[Section]) -> str:
    """A document as Markdown-ish plain text: title, then each section under its heading."""
    parts = [f"# {ctx.title}"]
    for s in sections:
        if len(s.heading_path) > 1:
            parts.append(f"## {s.heading_path[-1]}")
        parts.append(s.text)
    return "\n\n".join(parts)


# --------------------------------------------------------------------------------------------
# Examples


@dataclass(frozen=True)
class Stage:
    """What the curriculum asks for at one point of training."""

    max_passages: int
    richness: float
    hard: float  # chance that a distractor is a hard negative


def stage_at(progress: float, ramp: float) -> Stage:
    """One short passage at first, four long ones (and hard negatives) from `ramp` on."""
    t = min(1.0, progress / ramp) if ramp > 0 else 1.0
    return Stage(max_passages=1 + min(3, int(t * 4)), richness=0.2 + 0.8 * t, hard=0.5 * t)


def _chunk(ctx: DocContext, section: Section, index: int) -> Chunk:
    digest = zlib.crc32(f"{ctx.source}\x1f{section.text}".encode())
    return Chunk(
        id=f"{digest:08x}{index:04x}",
        source=ctx.source,
        heading_path=section.heading_path,
        title=ctx.title,
        text=section.text,
    )


def make_example(w: World, n_passages: int, stage: Stage) -> Example:
    """A question, its answer, and `n_passages` passages with the gold one among them."""
    r = w.rng
    while True:
        kind = r.choices(list(GOLD_WEIGHTS), weights=list(GOLD_WEIGHTS.values()))[0]
        ctx = w.doc()
        gold = SECTION_BUILDERS[kind](w, ctx, stage.richness)
        covers = [q for q in gold.qas if q.kind == "cover"]
        others = [q for q in gold.qas if q.kind != "cover"]
        if covers and (not others or r.random() < COVER_SHARE):
            qa = covers[0]
        elif others:
            qa = r.choice(others)
        else:
            continue
        break
    distractors: list[tuple[DocContext, Section]] = []
    hard = 0
    while len(distractors) < n_passages - 1:
        roll = r.random()
        if roll < stage.hard and gold.schema is not None:
            dctx = w.doc()
            section = SECTION_BUILDERS[kind](w, dctx, stage.richness, gold.schema)
            is_hard = True
        elif roll < stage.hard + 0.1:
            dctx = ctx  # another section of the same document
            section = SECTION_BUILDERS[r.choice(list(SECTION_BUILDERS))](w, dctx, stage.richness)
            is_hard = False
        else:
            dctx = w.doc()
            section = SECTION_BUILDERS[r.choice(list(SECTION_BUILDERS))](w, dctx, stage.richness)
            is_hard = False
        if _ambiguous(qa, gold, section):
            continue
        distractors.append((dctx, section))
        hard += is_hard
    position = r.randrange(n_passages)
    ordered = [*distractors]
    ordered.insert(position, (ctx, gold))
    passages = [_chunk(c, s, i) for i, (c, s) in enumerate(ordered)]
    sections = [s for _, s in ordered]
    more = [
        q
        for i, s in enumerate(sections)
        for q in s.qas
        if q is not qa
        and q.kind != "cover"
        and not any(_ambiguous(q, s, o) for j, o in enumerate(sections) if j != i)
    ]
    r.shuffle(more)
    asked = {normalize_answer(qa.answer)}
    unique = []
    for q in more:  # one question per answer: a later turn never repeats an earlier answer
        if normalize_answer(q.answer) not in asked:
            asked.add(normalize_answer(q.answer))
            unique.append(q)
    more = unique
    return Example(qa.question, qa.answer, qa.kind, passages, position, hard, more)


def _ambiguous(qa: QA, gold: Section, other: Section) -> bool:
    """Whether `other` could also answer the question (same section name in a cover question
    is fine: the title differs)."""
    if qa.key and qa.key.lower() in other.text.lower():
        return True
    return other.heading_path == gold.heading_path


def plain_text(w: World, stage: Stage, qa_share: float, qa_lines: int = 5) -> str:
    """A synthetic document as plain text, sometimes followed by up to `qa_lines` questions
    about it (every token of which can be copied from the document: a dense copying signal)."""
    with_qa = w.rng.random() < qa_share
    ctx, sections = build_document(w, stage.richness, (0, 2) if with_qa else (2, 4))
    text = render_document(ctx, sections)
    if with_qa:
        qas = [q for s in sections for q in s.qas]
        w.rng.shuffle(qas)
        lines = [
            f"{PLAIN_QUESTION}{q.question}\n{PLAIN_ANSWER}{q.answer}"
            for q in qas[: w.rng.randint(min(2, qa_lines), qa_lines)]
        ]
        text += "\n\n" + "\n\n".join(lines)
    return text


# --------------------------------------------------------------------------------------------
# Tokens


def tokenizer_corpus(seed: int, documents: int) -> Iterator[str]:
    """Synthetic text only: documents and prompts from the training half of the pools."""
    w = World(random.Random(f"tokenizer-{seed}"), heldout=False)
    full = Stage(4, 1.0, 0.5)
    for i in range(documents):
        ctx, sections = build_document(w, full.richness)
        yield render_document(ctx, sections)
        if i % 4 == 0:
            ex = make_example(w, 4, full)
            yield context_messages(ex.question, ex.passages)[0]["content"] + "\n" + ex.answer


# Words split from the spaces before them, digits one by one: a word has the same tokens
# wherever it stands ("Owner: Vornex", "(Vornex", an answer's first word after the header),
# so copying it is copying tokens.
SPLIT_PATTERN = r"\s+|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"


def build_reader_tokenizer(
    seed: int, vocab_size: int, documents: int = 3000, split_words: bool = True
) -> Any:
    """Byte-level BPE with Llama 3's special tokens and chat template, fitted to synthetic
    text (so every token is common in training; any other text still tokenises)."""
    return fit_tokenizer(
        tokenizer_corpus(seed, documents),
        vocab_size,
        split_pattern=SPLIT_PATTERN if split_words else None,
    )


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_messages(ex: Example) -> list[dict[str, str]]:
    return context_messages(ex.question, ex.passages)


def encode_chat(tokenizer: Any, ex: Example, follow_ups: int = 0) -> tuple[list[int], list[int]]:
    """The prompt and answer as the trainer renders chat examples
    (`docmodel_trainer.trainset.prompt_and_answer_ids`), then up to `follow_ups` further
    question turns; labels on the answers (and their `<|eot_id|>`) only."""
    prompt_ids, answer_ids = prompt_and_answer_ids(tokenizer, prompt_messages(ex), ex.answer)
    ids, labels = prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids
    for qa in ex.more[:follow_ups]:
        turn = [{"role": "user", "content": qa.question}]
        asked = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        answered = tokenizer.apply_chat_template(
            [*turn, {"role": "assistant", "content": qa.answer}], tokenize=False
        )
        bos = tokenizer.bos_token or ""
        asked_ids = _encode(tokenizer, asked.removeprefix(bos))
        reply_ids = _encode(tokenizer, answered[len(asked) :])
        ids += asked_ids + reply_ids
        labels += [IGNORE] * len(asked_ids) + reply_ids
    return ids, labels


def encode_plain(tokenizer: Any, text: str, max_tokens: int) -> tuple[list[int], list[int]]:
    ids = [tokenizer.bos_token_id, *_encode(tokenizer, text)][: max_tokens - 1]
    ids.append(tokenizer.convert_tokens_to_ids("<|end_of_text|>"))
    return ids, list(ids)


# --------------------------------------------------------------------------------------------
# Recipe, model and training


@dataclass
class Recipe:
    seed: int = 0
    steps: int = 9000
    batch_tokens: int = 2048  # padded tokens per optimiser step
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 300
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    curriculum_ramp: float = 0.5  # share of the steps over which passages grow to four
    induction_steps: int = 0  # first steps on fixed-length token copying only
    copy_share: float = 0.0  # share of sequences that are token copying or key/value recall
    plain_share: float = 0.25  # share of sequences that are plain text
    follow_ups: int = 6  # further questions on the same passages, as later turns
    plain_qa_share: float = 0.5  # of those, share followed by question/answer lines
    plain_qa_lines: int = 5  # at most this many question/answer lines
    max_plain_tokens: int = 512
    vocab_size: int = 2048
    tokenizer_documents: int = 3000
    split_words: bool = True
    hidden_size: int = 192
    intermediate_size: int = 512
    layers: int = 4
    heads: int = 6
    kv_heads: int = 6
    rope_theta: float = 10000.0
    initializer_range: float = 0.02
    max_positions: int = 2048
    eval_examples: int = 300
    eval_every: int = 1500
    eval_subset: int = 96
    eval_passages: int = 4
    max_new_tokens: int = 48


class _Batcher:
    """Sequences for each step, deterministic from the seed: generated in pools of a few
    batches, sorted by length so padding stays small, then handed out in a shuffled order."""

    POOL_BATCHES = 8

    def __init__(self, tokenizer: Any, recipe: Recipe):
        self.tokenizer = tokenizer
        self.recipe = recipe
        self.rng = random.Random(f"train-{recipe.seed}")
        self.world = World(self.rng, heldout=False)
        self.queue: list[list[tuple[list[int], list[int], str]]] = []
        self.counts: Counter[str] = Counter()

    def next(self, progress: float) -> list[tuple[list[int], list[int], str]]:
        if not self.queue:
            self._fill(stage_at(progress, self.recipe.curriculum_ramp))
        return self.queue.pop()

    def _fill(self, stage: Stage) -> None:
        budget = self.recipe.batch_tokens * self.POOL_BATCHES
        seqs: list[tuple[list[int], list[int], str]] = []
        total = 0
        while total < budget:
            seq = self._sequence(stage)
            seqs.append(seq)
            total += len(seq[0])
        seqs.sort(key=lambda s: len(s[0]))
        batches: list[list[tuple[list[int], list[int], str]]] = [[]]
        for seq in seqs:
            batch = batches[-1]
            if batch and (len(batch) + 1) * len(seq[0]) > self.recipe.batch_tokens:
                batches.append([seq])
            else:
                batch.append(seq)
        self.rng.shuffle(batches)
        self.queue = batches

    def _sequence(self, stage: Stage) -> tuple[list[int], list[int], str]:
        r = self.rng
        roll = r.random()
        if roll < self.recipe.copy_share:
            ids, labels = self._copy_or_recall()
            return ids, labels, "copy"
        if roll < self.recipe.copy_share + self.recipe.plain_share:
            text = plain_text(
                self.world, stage, self.recipe.plain_qa_share, self.recipe.plain_qa_lines
            )
            ids, labels = encode_plain(self.tokenizer, text, self.recipe.max_plain_tokens)
            self.counts["plain"] += 1
            return ids, labels, "plain"
        n = stage.max_passages if r.random() < 0.5 else r.randint(1, stage.max_passages)
        ex = make_example(self.world, n, stage)
        ids, labels = encode_chat(self.tokenizer, ex, self.recipe.follow_ups)
        self.counts["qa"] += 1
        self.counts["answers"] += 1 + min(len(ex.more), self.recipe.follow_ups)
        self.counts[f"passages_{n}"] += 1
        return ids, labels, "qa"

    def induction(
        self, sequences: int = 16, span: int = 32
    ) -> list[tuple[list[int], list[int], str]]:
        """Random tokens, then the same tokens again, all of one length: the task on which a
        small model first forms the heads that find an earlier occurrence and copy what
        followed it (with mixed lengths, or a higher learning rate, it stays at chance for
        hundreds of steps)."""
        r = self.rng
        low, high = len(SPECIAL_TOKENS), len(self.tokenizer) - 1
        bos = int(self.tokenizer.bos_token_id)
        batch = []
        for _ in range(sequences):
            tokens = [r.randint(low, high) for _ in range(span)]
            # The first repeated token cannot be known; every later one can.
            labels = [IGNORE] * (2 + span) + tokens[1:]
            batch.append(([bos, *tokens, *tokens], labels, "copy"))
        self.counts["induction"] += sequences
        return batch

    def _copy_or_recall(self) -> tuple[list[int], list[int]]:
        """Random tokens, then the same tokens again (loss on the repeat), or random key/value
        token pairs, then some keys again (loss on their values): the two circuits reading
        needs (find an earlier occurrence, copy what followed it), taught directly."""
        r = self.rng
        low = len(SPECIAL_TOKENS)
        high = len(self.tokenizer) - 1
        bos = int(self.tokenizer.bos_token_id)
        if r.random() < 0.5:
            span = [r.randint(low, high) for _ in range(r.randint(8, 96))]
            ids = [bos, *span, *span]
            labels = [IGNORE] * (2 + len(span)) + span[1:]
            self.counts["copy"] += 1
            return ids, labels
        n = r.randint(4, 48)
        keys = r.sample(range(low, high + 1), n)
        values = [[r.randint(low, high) for _ in range(r.randint(1, 3))] for _ in keys]
        ids, labels = [bos], [IGNORE]
        for key, value in zip(keys, values, strict=True):
            ids += [key, *value]
            labels += [IGNORE] * (1 + len(value))
        for i in r.sample(range(n), r.randint(1, min(n, 12))):
            ids += [keys[i], *values[i]]
            labels += [IGNORE, *values[i]]
        self.counts["recall"] += 1
        return ids, labels


def heldout_examples(seed: int, count: int, passages: int, richness: float = 1.0) -> list[Example]:
    """Questions about entities whose names never occur in training, with four passages."""
    w = World(random.Random(f"heldout-{seed}-{passages}"), heldout=True)
    full = Stage(max_passages=passages, richness=richness, hard=0.5)
    return [make_example(w, passages, full) for _ in range(count)]


def build_model(tokenizer: Any, recipe: Recipe) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(recipe.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.kv_heads,
        max_position_embeddings=recipe.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": recipe.rope_theta},
        initializer_range=recipe.initializer_range,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _lr_at(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    t = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    floor = recipe.min_lr_ratio
    return recipe.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _batch_loss(
    model: Any, batch: list[tuple[list[int], list[int], str]], pad_id: int
) -> tuple[Any, dict[str, float]]:
    """Mean over sequences of each sequence's mean token loss; logits only where a label is."""
    import torch
    import torch.nn.functional as F

    width = max(len(ids) for ids, _, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, lab, _) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    hidden = model.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    where = targets != IGNORE
    logits = model.lm_head(hidden[:, :-1][where])
    losses = F.cross_entropy(logits.float(), targets[where], reduction="none")
    rows = where.nonzero()[:, 0]
    per_row = torch.zeros(len(batch)).index_add(0, rows, losses)
    counts = where.sum(dim=1).clamp(min=1)
    row_loss = per_row / counts
    loss = row_loss.mean()
    stats: dict[str, float] = {}
    for kind in ("qa", "plain", "copy"):
        idx = [i for i, (_, _, k) in enumerate(batch) if k == kind]
        if idx:
            stats[kind] = float(row_loss[idx].mean().item())
    return loss, stats


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    max_new_tokens: int,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Greedy answers to `examples`: exact match and token F1 (SQuAD normalisation), overall
    and per question kind."""
    import torch

    model.eval()
    prompts = [
        list(
            tokenizer.apply_chat_template(
                prompt_messages(ex), add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
        for ex in examples
    ]
    order = sorted(range(len(examples)), key=lambda i: len(prompts[i]))
    answers: dict[int, str] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                p = prompts[i]
                ids[row, width - len(p) :] = torch.tensor(p)
                mask[row, width - len(p) :] = 1
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            for row, i in enumerate(idx):
                answers[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
    model.train()
    by_kind: dict[str, list[float]] = {}
    em_all, f1_all = [], []
    for i, ex in enumerate(examples):
        em = exact_match(answers[i], ex.answer)
        em_all.append(em)
        f1_all.append(token_f1(answers[i], ex.answer))
        by_kind.setdefault(ex.kind, []).append(em)
    return {
        "exact_match": sum(em_all) / len(em_all),
        "token_f1": sum(f1_all) / len(f1_all),
        "count": len(examples),
        "exact_match_by_kind": {k: round(sum(v) / len(v), 3) for k, v in sorted(by_kind.items())},
        "answers": [answers[i] for i in range(len(examples))],
    }


def build_reader_base(out_dir: Path, *, seed: int = 0, steps: int = 9000, **settings: Any) -> Path:
    """Train the reader base model and write it, its tokenizer and `docmodel-reader.json`
    (the recipe, held-out scores over training, wall time) to `out_dir`."""
    import torch
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    recipe = Recipe(seed=seed, steps=steps, **settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    random.seed(seed)
    torch.manual_seed(seed)
    tokenizer = build_reader_tokenizer(
        seed, recipe.vocab_size, recipe.tokenizer_documents, recipe.split_words
    )
    model = build_model(tokenizer, recipe)
    params = sum(p.numel() for p in model.parameters())
    log.info(
        "Built reader model params=%d vocab=%d hidden=%d layers=%d threads=%d",
        params,
        len(tokenizer),
        recipe.hidden_size,
        recipe.layers,
        torch.get_num_threads(),
    )
    heldout = heldout_examples(seed, recipe.eval_examples, recipe.eval_passages)
    easy = heldout_examples(seed, recipe.eval_subset // 2, 1, 0.5)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )
    batcher = _Batcher(tokenizer, recipe)
    pad_id = int(tokenizer.pad_token_id)
    history: list[dict[str, Any]] = []
    trained_tokens = 0
    ema: dict[str, float] = {}
    model.train()
    train_started = time.monotonic()
    with (
        logging_redirect_tqdm(),
        tqdm(total=recipe.steps, desc="reader-base", unit="step", mininterval=5.0) as bar,
    ):
        for step in range(recipe.steps):
            progress = step / recipe.steps
            batch = batcher.induction() if step < recipe.induction_steps else batcher.next(progress)
            lr = _lr_at(step, recipe)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, stats = _batch_loss(model, batch, pad_id)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            trained_tokens += sum(len(ids) for ids, _, _ in batch)
            for k, v in stats.items():
                ema[k] = v if k not in ema else 0.98 * ema[k] + 0.02 * v
            bar.update(1)
            bar.set_postfix(
                qa=f"{ema.get('qa', 0.0):.3f}",
                lm=f"{ema.get('plain', 0.0):.3f}",
                copy=f"{ema.get('copy', 0.0):.3f}",
                refresh=False,
            )
            done = step + 1
            if done % 100 == 0 or done == recipe.steps:
                stage = stage_at(progress, recipe.curriculum_ramp)
                log.info(
                    "Trained step=%d/%d loss=%.4f qa_loss=%.4f lm_loss=%.4f copy_loss=%.4f "
                    "lr=%.2e passages=%d batch=%d tokens=%d elapsed_s=%.0f",
                    done,
                    recipe.steps,
                    loss.item(),
                    ema.get("qa", float("nan")),
                    ema.get("plain", float("nan")),
                    ema.get("copy", float("nan")),
                    lr,
                    stage.max_passages,
                    len(batch),
                    trained_tokens,
                    time.monotonic() - train_started,
                )
            if done % recipe.eval_every == 0 and done < recipe.steps:
                scores = evaluate(
                    model, tokenizer, heldout[: recipe.eval_subset], recipe.max_new_tokens
                )
                one = evaluate(model, tokenizer, easy, recipe.max_new_tokens)
                history.append(_checkpoint(done, scores, time.monotonic() - train_started, one))
    train_seconds = time.monotonic() - train_started
    scores = evaluate(model, tokenizer, heldout, recipe.max_new_tokens)
    one = evaluate(model, tokenizer, easy, recipe.max_new_tokens)
    history.append(_checkpoint(recipe.steps, scores, train_seconds, one))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    samples = [
        {"question": ex.question, "reference": ex.answer, "answer": a, "kind": ex.kind}
        for ex, a in zip(heldout[:20], scores["answers"][:20], strict=True)
    ]
    wall = time.monotonic() - started
    report = {
        "kind": "reader-base",
        "recipe": asdict(recipe),
        "model": {"params": params, "vocab_size": len(tokenizer)},
        "data": {
            "train_sequences": dict(batcher.counts),
            "train_tokens": trained_tokens,
            "heldout_examples": len(heldout),
            "heldout_passages": recipe.eval_passages,
            "heldout_hard_negatives": sum(ex.hard for ex in heldout),
            "heldout_names": f"crc32(name) % {HELDOUT_SHARE} == 0 (never used in training)",
        },
        "heldout": {
            "exact_match": scores["exact_match"],
            "token_f1": scores["token_f1"],
            "exact_match_by_kind": scores["exact_match_by_kind"],
        },
        "history": history,
        "samples": samples,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(wall, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out / RECIPE_FILE).write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "Built reader base path=%s exact_match=%.3f token_f1=%.3f train_s=%.0f params=%d",
        out,
        scores["exact_match"],
        scores["token_f1"],
        train_seconds,
        params,
    )
    return out


def _checkpoint(
    step: int, scores: dict[str, Any], seconds: float, one: dict[str, Any]
) -> dict[str, Any]:
    log.info(
        "Evaluated step=%d exact_match=%.3f token_f1=%.3f count=%d one_passage_exact_match=%.3f "
        "by_kind=%s",
        step,
        scores["exact_match"],
        scores["token_f1"],
        scores["count"],
        one["exact_match"],
        json.dumps(scores["exact_match_by_kind"]),
    )
    return {
        "step": step,
        "exact_match": round(scores["exact_match"], 4),
        "token_f1": round(scores["token_f1"], 4),
        "count": scores["count"],
        "one_passage_exact_match": round(one["exact_match"], 4),
        "exact_match_by_kind": scores["exact_match_by_kind"],
        "train_seconds": round(seconds, 1),
    }


# --------------------------------------------------------------------------------------------
# Command line

TUNABLE = (
    "batch_tokens",
    "lr",
    "warmup_steps",
    "hidden_size",
    "intermediate_size",
    "layers",
    "heads",
    "kv_heads",
    "vocab_size",
    "induction_steps",
    "copy_share",
    "plain_share",
    "follow_ups",
    "plain_qa_share",
    "plain_qa_lines",
    "curriculum_ramp",
    "rope_theta",
    "eval_every",
    "eval_examples",
    "eval_subset",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Recipe()
    parser.add_argument("output", type=Path, help="directory to write the model into")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    for name in TUNABLE:
        default = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--log-format", choices=["text", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    build_reader_base(
        args.output,
        seed=args.seed,
        steps=args.steps,
        **{name: getattr(args, name) for name in TUNABLE},
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from docmodel.logs import setup_logging

    parser = argparse.ArgumentParser(
        prog="docmodel-trainer reader-base", description=__doc__.split("\n\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_format)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
