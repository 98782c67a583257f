"""Labels, column names and Arrow schemas of every output, in one place.

The label scheme is ../shared/TAXONOMY.md: one ``depiction``, one ``mode`` and zero or more
``tags`` per passage, each with a score.
"""

from __future__ import annotations

import pyarrow as pa

DEPICTIONS = ("malevolent", "benevolent", "neutral", "none")  # order = precedence
MODES = ("fiction", "discourse", "other")
TAGS = (
    "deception",
    "manipulation",
    "coercion",
    "power_seeking",
    "shutdown_resistance",
    "sabotage",
    "takeover",
    "violence",
)
# Order = how far a passage went. In a set with several encoders, "embedding" is a passage the
# first head settled over the first encoder alone, "all_encoders" one every encoder embedded.
STAGES = ("prefilter", "fasttext", "embedding", "all_encoders")

# Final scores, from the furthest stage a passage reached.
SCORE_COLUMNS = [f"score_{label}" for label in DEPICTIONS + MODES]
# Every score each stage gave, kept so that thresholds can change without rerunning models.
FASTTEXT_COLUMNS = [f"fasttext_p_{label}" for label in DEPICTIONS + MODES]
EMBEDDING_COLUMNS = [f"embedding_p_{label}" for label in DEPICTIONS + MODES + TAGS]

_f32 = pa.float32()

# What the cascade returns for a batch of passages (also the `classify` output, as JSON).
CLASSIFICATION_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string()),
        pa.field("depiction", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        *[pa.field(c, _f32) for c in SCORE_COLUMNS],
        *[pa.field(c, _f32) for c in FASTTEXT_COLUMNS],
        *[pa.field(c, _f32) for c in EMBEDDING_COLUMNS],
    ]
)

# annotations/<shard>.parquet: one row per passage that reached fastText.
ANNOTATION_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("passage_index", pa.int32()),
        pa.field("char_start", pa.int64()),
        pa.field("char_end", pa.int64()),
        pa.field("words", pa.int32()),
        pa.field("text", pa.string()),
        *CLASSIFICATION_SCHEMA,
        pa.field("dup_cluster", pa.string()),
        pa.field("dup_is_representative", pa.bool_()),
    ]
)

# annotations/<shard>.documents.parquet: one row per document with a lexicon hit.
DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("words", pa.int64()),
        pa.field("passages", pa.int32()),
        pa.field("depiction", pa.string()),
        pa.field("mode", pa.string()),
        *[pa.field(f"passages_{label}", pa.int32()) for label in DEPICTIONS],
        pa.field("max_score_malevolent", _f32),
        pa.field("max_score_benevolent", _f32),
    ]
)

# excluded/<shard>.parquet adds these to the input schema.
EXCLUSION_COLUMNS = ("exclusion_reason",)
