"""Dense and hybrid retrieval: the fusion, the passage index artifact, the embedding model (the
packaged all-MiniLM-L6-v2, found like the base model) and its checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from docmodel import basemodel
from docmodel.api import DocModelSpec, EmbeddingModelSpec
from docmodel.dataset import Chunk
from docmodel.retrieval import RetrievalIndex, read_index, read_vectors, write_index
from docmodel.search import (
    EmbeddingInfo,
    EmbeddingMismatch,
    HybridRetriever,
    PassageIndex,
    check_embedding,
    ids_digest,
    indexed_text,
    open_retriever,
    read_passage_index,
    recall_at,
    reciprocal_rank_fusion,
    write_passage_index,
)

from testkit.models import embedding_encoder

PASSAGES = [
    ("net", ["Networking"], "The cluster's ingress controller terminates TLS on port 443."),
    (
        "oncall",
        ["On-call"],
        "Pages go to the primary on-call engineer, then escalate after 15 minutes.",
    ),
    (
        "backup",
        ["Backups"],
        "Database snapshots are taken every night at 02:00 UTC and kept 30 days.",
    ),
    ("leave", ["Holidays"], "Employees get 25 days of paid vacation a year."),
    ("deploy", ["Releases"], "Production deploys happen on weekdays through the release pipeline."),
]
CHUNKS = [Chunk(id=i, source=f"{i}.md", heading_path=h, text=t) for i, h, t in PASSAGES]
# Paraphrases that share almost no words with their passage: dense retrieval's case.
PARAPHRASES = {
    "How long are DB backups retained?": "backup",
    "Who is alerted first when there is an incident?": "oncall",
    "How much time off do staff receive annually?": "leave",
}


# -- fusion --------------------------------------------------------------------------------------


def test_fusion_sums_reciprocal_ranks() -> None:
    # 7 is second in both rankings (2/62 = 0.032258); 1 and 3 are first in one and third in
    # the other (1/61 + 1/63 = 0.032266), a tie that position breaks.
    assert reciprocal_rank_fusion([[1, 7, 3], [3, 7, 1]], k=3) == [1, 3, 7]
    # A passage only one ranking found ranks below one both found.
    assert reciprocal_rank_fusion([[1, 2], [2, 9]], k=3) == [2, 1, 9]


def test_fusion_ties_break_by_best_rank_then_position() -> None:
    # 4 and 5 score the same (first in one ranking each): the lower position wins.
    assert reciprocal_rank_fusion([[5], [4]], k=2) == [4, 5]
    # The same two ranks in swapped rankings: an exact tie, the lower position first.
    assert reciprocal_rank_fusion([[8, 3], [3, 8]], k=2) == [3, 8]
    assert reciprocal_rank_fusion([[], []], k=2) == []
    assert reciprocal_rank_fusion([[1, 2, 3]], k=2) == [1, 2]


def test_recall_at_counts_questions_with_a_gold_passage() -> None:
    ranked = [["a", "b", "c"], ["c", "d", "e"], ["x"]]
    assert recall_at(ranked, ["b", "e", None], (1, 3)) == {"1": 0.0, "3": 1.0}
    assert recall_at(ranked, [None, None, None], (1,)) == {"1": None}


# -- the embedding model -------------------------------------------------------------------------


def test_packaged_embedding_model_is_found_without_download() -> None:
    found = basemodel.locate(EmbeddingModelSpec(), field="spec.evaluation.baseline.embeddingModel")
    assert found.kind == "package" and found.path is not None
    assert (found.path / "model.safetensors").is_file()
    encoder = embedding_encoder()
    assert encoder.info.dimensions == 384 and encoder.info.pooling == "mean"
    assert encoder.info.identity.startswith("sha256:")


def test_a_copy_of_the_packaged_model_has_the_same_identity(tmp_path: Path) -> None:
    packaged = basemodel.locate(EmbeddingModelSpec()).path
    assert packaged is not None
    copy = tmp_path / "minilm"
    shutil.copytree(packaged, copy, ignore=shutil.ignore_patterns(basemodel.DIGEST_FILE))
    assert basemodel.identity(EmbeddingModelSpec(name=str(copy))) == basemodel.identity(
        EmbeddingModelSpec()
    )


def test_dense_retrieval_finds_paraphrased_passages() -> None:
    encoder = embedding_encoder()
    vectors = encoder.encode([indexed_text(c) for c in CHUNKS])
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    dense = open_retriever("Dense", CHUNKS, vectors, encoder)
    found = dense.retrieve(list(PARAPHRASES), 1)
    assert [hits[0].id for hits in found] == list(PARAPHRASES.values())
    hybrid = open_retriever("Hybrid", CHUNKS, vectors, encoder)
    assert isinstance(hybrid, HybridRetriever)
    assert [h[0].id for h in hybrid.retrieve(list(PARAPHRASES), 2)] == list(PARAPHRASES.values())
    # A question of stop words only: BM25 ranks nothing, dense and hybrid still answer.
    assert open_retriever("BM25", CHUNKS).retrieve(["what is it"], 2) == [[]]
    assert len(hybrid.retrieve(["what is it"], 2)[0]) == 2


def test_batching_does_not_change_a_vector() -> None:
    encoder = embedding_encoder()
    texts = [indexed_text(c) for c in CHUNKS]
    together = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    assert np.abs(together - alone).max() < 1e-5


def test_a_query_is_embedded_and_retrieved_identically_in_evaluation_and_serving(
    tmp_path: Path,
) -> None:
    """The trainer's path (evaluation: the dataset's passage index, the spec's model) and the
    server's (a retrieval revision's index, the model named by it) give the same vector and
    the same passages."""
    from docmodel_server.context import EmbeddingSource, query_encoder
    from docmodel_trainer import passage_index

    encoder = embedding_encoder()
    vectors = encoder.encode([indexed_text(c) for c in CHUNKS])
    spec = DocModelSpec.model_validate({"source": {"bucket": "company-docs"}})
    dataset = PassageIndex(
        retriever="Hybrid",
        passages=len(CHUNKS),
        passage_ids=ids_digest(CHUNKS),
        embedding=encoder.info,
    )
    write_passage_index(tmp_path / "dataset", dataset, vectors)
    index, stored = passage_index.read(tmp_path / "dataset", CHUNKS, "dataset")
    evaluation = passage_index.retriever(
        "Hybrid", spec, tmp_path / "w", CHUNKS, index, stored, "dataset"
    )

    adapter = tmp_path / "adapter"
    write_index(
        adapter,
        RetrievalIndex(retriever="Hybrid", top_k=2, passages=len(CHUNKS), embedding=encoder.info),
        CHUNKS,
        vectors,
    )
    found = read_index(adapter)
    assert found is not None
    served_index, served_passages = found
    served_encoder = query_encoder(served_index, EmbeddingSource(tmp_path / "s"))
    assert served_encoder is not None
    serving = open_retriever(
        "Hybrid", served_passages, read_vectors(adapter, served_index), served_encoder
    )

    question = "Who is alerted first when there is an incident?"
    q_eval = evaluation.dense.encoder.encode([question])
    q_serve = served_encoder.encode([question])
    assert np.array_equal(q_eval, q_serve)
    assert [c.id for c in evaluation.retrieve([question], 2)[0]] == [
        c.id for c in serving.retrieve([question], 2)[0]
    ]


# -- the index artifact and its errors -----------------------------------------------------------


def _info(**update: object) -> EmbeddingInfo:
    base = EmbeddingInfo(
        name="sentence-transformers/all-MiniLM-L6-v2",
        identity="sha256:aa",
        dimensions=4,
        pooling="mean",
        max_seq_length=256,
    )
    return base.model_copy(update=update)


def test_passage_index_round_trip(tmp_path: Path) -> None:
    vectors = np.eye(len(CHUNKS), 4, dtype=np.float32)
    index = PassageIndex(
        retriever="Dense", passages=len(CHUNKS), passage_ids=ids_digest(CHUNKS), embedding=_info()
    )
    write_passage_index(tmp_path, index, vectors)
    found = read_passage_index(tmp_path, CHUNKS)
    assert found is not None
    loaded, loaded_vectors = found
    assert loaded == index and loaded_vectors is not None
    assert np.array_equal(loaded_vectors, vectors)
    assert read_passage_index(tmp_path / "none", CHUNKS) is None

    bm25 = PassageIndex(retriever="BM25", passages=len(CHUNKS), passage_ids=ids_digest(CHUNKS))
    write_passage_index(tmp_path / "bm25", bm25)
    assert read_passage_index(tmp_path / "bm25", CHUNKS) == (bm25, None)


def test_passage_index_of_other_passages_is_refused(tmp_path: Path) -> None:
    index = PassageIndex(retriever="BM25", passages=len(CHUNKS), passage_ids=ids_digest(CHUNKS))
    write_passage_index(tmp_path, index)
    with pytest.raises(ValueError, match="not the 4 passages beside it"):
        read_passage_index(tmp_path, CHUNKS[:4])
    reordered = [CHUNKS[1], CHUNKS[0], *CHUNKS[2:]]
    with pytest.raises(ValueError, match=r"passage-index\.json"):
        read_passage_index(tmp_path, reordered)


def test_embeddings_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    index = PassageIndex(
        retriever="Dense", passages=len(CHUNKS), passage_ids=ids_digest(CHUNKS), embedding=_info()
    )
    with pytest.raises(ValueError, match="do not fit 5 passages of 4 dimensions"):
        write_passage_index(tmp_path, index, np.zeros((5, 8), dtype=np.float32))
    write_passage_index(tmp_path, index, np.zeros((5, 4), dtype=np.float32))
    np.save(tmp_path / "embeddings.npy", np.zeros((5, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected \(5, 4\) float32"):
        read_passage_index(tmp_path, CHUNKS)


def test_a_mismatched_embedding_model_is_refused() -> None:
    check_embedding(_info(), _info())
    check_embedding(_info(identity="sentence-transformers/all-MiniLM-L6-v2"), _info())  # by name
    with pytest.raises(EmbeddingMismatch, match="768 dimensions, the passages have 4"):
        check_embedding(_info(), _info(dimensions=768))
    with pytest.raises(EmbeddingMismatch, match="model other/model, the passages were embedded"):
        check_embedding(_info(), _info(name="other/model"))
    with pytest.raises(EmbeddingMismatch, match="weights sha256:bb"):
        check_embedding(_info(), _info(identity="sha256:bb"))
    encoder = embedding_encoder()
    with pytest.raises(EmbeddingMismatch, match="gives 384 dimensions, the passages have 4"):
        open_retriever("Dense", CHUNKS, np.zeros((5, 4), dtype=np.float32), encoder)
    with pytest.raises(ValueError, match="this passage index has none"):
        open_retriever("Hybrid", CHUNKS)


def test_serving_refuses_an_index_of_another_model(tmp_path: Path) -> None:
    from docmodel_server.context import EmbeddingSource, RequestContext

    info = embedding_encoder().info.model_copy(update={"dimensions": 768})
    write_index(
        tmp_path,
        RetrievalIndex(retriever="Dense", top_k=2, passages=len(CHUNKS), embedding=info),
        CHUNKS,
        np.zeros((len(CHUNKS), 768), dtype=np.float32),
    )
    with pytest.raises(EmbeddingMismatch, match="384 dimensions, the passages have 768"):
        RequestContext.load(tmp_path, None, 2048, None, EmbeddingSource(tmp_path / "w"))


def test_a_missing_embedding_model_names_every_place_tried(tmp_path: Path) -> None:
    import docmodel_embedding

    spec = EmbeddingModelSpec(name=str(tmp_path / "no-such-model"))
    with pytest.raises(basemodel.ModelNotFound) as exc:
        docmodel_embedding.load(spec, tmp_path)
    message = str(exc.value)
    assert "no-such-model" in message
    assert "does not exist" in message and "model cache" in message
    assert "spec.evaluation.baseline.embeddingModel.mirror is not set" in message


def test_top_k_by_partition_matches_a_full_sort_ties_included() -> None:
    from docmodel.search import _top

    rng = np.random.default_rng(3)
    for _ in range(50):
        scores = rng.integers(0, 6, size=40).astype(np.float32)  # many ties
        keep = rng.random(40) > 0.3
        for k in (1, 3, 10, 40, 60):
            order = np.lexsort((np.arange(40), -scores))
            assert _top(scores, k) == [int(i) for i in order[:k]]
            kept = [int(i) for i in order if keep[i]][:k]
            assert _top(scores, k, keep) == kept
    assert _top(np.zeros(0, dtype=np.float32), 3) == []
