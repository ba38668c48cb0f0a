"""Listing, fetching and parsing the source documents, with a parsed-document cache.

The cache lives in the artifact store at `<namespace>/<name>/cache/parsed/<digest>.json`, the
digest covering the parser version, the object key and its ETag, plus one `pack.json.gz` of
the last run's entries. A re-run over unchanged
documents reads only the cache (small JSON), never the documents; a failed parse is cached
too, so a corrupt file is not downloaded again until it changes.

Files are skipped, with the reason recorded, when they are empty or larger than
`spec.source.maxFileBytes` (decided from the listing, before any download), of an unsupported
type, unreadable (corrupt PDF, binary content), or denied to us.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from docmodel.api import DocModelSpec
from docmodel.dataset import SkippedFile
from docmodel.revision import ResolvedSource, list_source
from docmodel.storage import AccessDenied, NotFound, ObjectInfo, ObjectStore, StorageError
from docmodel_trainer.parsing import (
    PARSER_VERSION,
    ParsedDocument,
    Unusable,
    kind_of,
    parse_document,
)
from docmodel_trainer.qa.provided import ProvidedFile, parse_qa_file

log = logging.getLogger("docmodel.trainer.ingest")

PROGRESS_EVERY = 100
PACK = "pack.json.gz"


@dataclass
class Listing:
    resolved: ResolvedSource  # the revision this listing gives
    documents: list[ObjectInfo] = field(default_factory=list)  # to fetch and parse
    qa_files: list[ObjectInfo] = field(default_factory=list)  # provided pairs to read
    matched: list[ObjectInfo] = field(default_factory=list)  # every included document
    skipped: list[SkippedFile] = field(default_factory=list)


def list_sources(
    store: ObjectStore, spec: DocModelSpec, qa_store: ObjectStore | None = None
) -> Listing:
    """What to read, and what to skip without reading (unsafe keys, empty, too large,
    unsupported)."""
    resolved = list_source(spec, store, qa_store)
    selection = resolved.selection
    out = Listing(
        resolved,
        matched=selection.documents,
        qa_files=selection.qa_files,
        skipped=list(selection.unsafe),
    )
    for obj in selection.documents:
        reason = skip_reason(obj, spec.source.max_file_bytes)
        if reason:
            out.skipped.append(SkippedFile(key=obj.key, reason=reason))
        else:
            out.documents.append(obj)
    return out


def skip_reason(obj: ObjectInfo, max_file_bytes: int) -> str | None:
    if kind_of(obj.key) is None:
        return "unsupported file type (Markdown, text, HTML and PDF are read)"
    if obj.size == 0:
        return "empty file"
    if obj.size > max_file_bytes:
        return f"file is {obj.size} bytes, over maxFileBytes={max_file_bytes} (not downloaded)"
    return None


class CacheEntry(BaseModel):
    key: str
    etag: str
    parser: str
    document: ParsedDocument | None = None
    qa: ProvidedFile | None = None
    skipped: str | None = None


@dataclass
class Fetched:
    documents: dict[str, ParsedDocument] = field(default_factory=dict)
    qa_files: list[ProvidedFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    bytes_downloaded: int = 0
    cache_hits: int = 0


class Fetcher:
    """Fetches and parses objects, reading and filling the parsed-document cache.

    The cache has two layers: one object per parsed document (written as documents are
    parsed) and a pack of all of a run's entries (`pack.json.gz`, written at the end), so a
    re-run reads one object instead of one per document. Unreadable cache data is ignored.
    """

    def __init__(
        self,
        source: ObjectStore,
        cache: ObjectStore | None,
        cache_prefix: str,
        *,
        max_file_bytes: int,
        workers: int = 8,
    ):
        self.source = source
        self.cache = cache
        self.cache_prefix = cache_prefix.strip("/")
        self.max_file_bytes = max_file_bytes
        self.workers = workers
        self._lock = threading.Lock()
        self._listed: set[str] | None = None
        self._pack: dict[str, Any] = {}
        self._used: dict[str, CacheEntry] = {}
        self._out = Fetched()

    @property
    def pack_key(self) -> str:
        return f"{self.cache_prefix}/{PACK}"

    def cache_key(self, obj: ObjectInfo) -> str:
        raw = f"{PARSER_VERSION}\x1f{obj.key}\x1f{obj.etag}"
        return f"{self.cache_prefix}/{hashlib.sha256(raw.encode()).hexdigest()}.json"

    def fetch(
        self, documents: list[ObjectInfo], qa_files: list[ObjectInfo], qa_source: ObjectStore
    ) -> Fetched:
        out = self._out = Fetched()
        self._load_pack()
        total = len(documents)
        done = 0

        def document(obj: ObjectInfo) -> None:
            nonlocal done
            entry = self._entry(obj, self.source, _parse_document)
            with self._lock:
                if entry.document is not None:
                    out.documents[obj.key] = entry.document
                else:
                    out.skipped.append(SkippedFile(key=obj.key, reason=entry.skipped or "unusable"))
                done += 1
                if done % PROGRESS_EVERY == 0 or done == total:
                    log.info(
                        "Parsed documents=%d/%d skipped=%d cached=%d bytes_downloaded=%d",
                        done,
                        total,
                        len(out.skipped),
                        out.cache_hits,
                        out.bytes_downloaded,
                    )

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for _ in pool.map(document, documents):
                pass
        for obj in qa_files:
            entry = self._entry(obj, qa_source, _parse_qa)
            if entry.qa is not None:
                out.qa_files.append(entry.qa)
            else:
                out.skipped.append(SkippedFile(key=obj.key, reason=entry.skipped or "unusable"))
        self._save_pack()
        out.documents = dict(sorted(out.documents.items()))
        out.skipped.sort(key=lambda s: s.key)
        return out

    def _load_pack(self) -> None:
        if self.cache is None:
            return
        try:
            data = self.cache.get_bytes(self.pack_key)
        except NotFound:
            return
        except StorageError as exc:
            log.warning("Skipped the parsed-document cache reason=%s: %s", exc.reason, exc)
            self.cache = None
            return
        try:
            pack = json.loads(gzip.decompress(data))
            if isinstance(pack, dict) and pack.get("parser") == PARSER_VERSION:
                self._pack = pack.get("entries") or {}
        except (OSError, ValueError) as exc:
            log.warning("Ignored the parsed-document cache pack reason=%s", type(exc).__name__)

    def _save_pack(self) -> None:
        if self.cache is None or set(self._used) == set(self._pack):
            return
        entries = {k: e.model_dump(mode="json") for k, e in sorted(self._used.items())}
        data = gzip.compress(
            json.dumps({"parser": PARSER_VERSION, "entries": entries}).encode(), mtime=0
        )
        try:
            self.cache.put_bytes(self.pack_key, data, "application/gzip")
        except StorageError as exc:
            log.warning("Failed to write the cache pack reason=%s", exc.reason)

    def _cached(self, key: str) -> CacheEntry | None:
        raw = self._pack.get(key)
        try:
            if raw is not None:
                return CacheEntry.model_validate(raw)
            if self.cache is None:
                return None
            with self._lock:
                if self._listed is None:
                    try:
                        self._listed = {o.key for o in self.cache.list(self.cache_prefix)}
                    except StorageError as exc:
                        log.warning("Skipped the parsed-document cache reason=%s", exc.reason)
                        self._listed = set()
            if key in self._listed:
                return CacheEntry.model_validate_json(self.cache.get_bytes(key))
        except (StorageError, ValidationError, ValueError) as exc:
            log.warning("Ignored a cache entry reason=%s", type(exc).__name__)
        return None

    def _entry(
        self,
        obj: ObjectInfo,
        store: ObjectStore,
        parse: Callable[[ObjectInfo, bytes], CacheEntry],
    ) -> CacheEntry:
        key = self.cache_key(obj)
        entry = self._cached(key)
        if entry is not None:
            with self._lock:
                self._out.cache_hits += 1
                self._used[key] = entry
            return entry
        try:
            data = store.get_bytes(obj.key)
        except (AccessDenied, NotFound) as exc:
            # Not cached: access may be granted, or the object may come back.
            return CacheEntry(key=obj.key, etag=obj.etag, parser=PARSER_VERSION, skipped=str(exc))
        with self._lock:
            self._out.bytes_downloaded += len(data)
        if len(data) > self.max_file_bytes:
            entry = CacheEntry(
                key=obj.key,
                etag=obj.etag,
                parser=PARSER_VERSION,
                skipped=f"file is {len(data)} bytes, over maxFileBytes={self.max_file_bytes}",
            )
        else:
            entry = parse(obj, data)
        with self._lock:
            self._used[key] = entry
        if self.cache is not None:
            try:
                self.cache.put_bytes(key, entry.model_dump_json().encode(), "application/json")
            except StorageError as exc:
                log.warning("Failed to write a cache entry key=%s reason=%s", obj.key, exc.reason)
        return entry


def _parse_document(obj: ObjectInfo, data: bytes) -> CacheEntry:
    entry = CacheEntry(key=obj.key, etag=obj.etag, parser=PARSER_VERSION)
    try:
        entry.document = parse_document(obj.key, data)
    except Unusable as exc:
        entry.skipped = str(exc)
    except Exception as exc:  # a parser bug must not stop the run; the file is listed
        log.exception("Failed to parse key=%s", obj.key)
        entry.skipped = f"parser error ({type(exc).__name__})"
    return entry


def _parse_qa(obj: ObjectInfo, data: bytes) -> CacheEntry:
    return CacheEntry(
        key=obj.key, etag=obj.etag, parser=PARSER_VERSION, qa=parse_qa_file(obj.key, data)
    )
