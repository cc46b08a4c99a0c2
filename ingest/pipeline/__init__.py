"""The ingest pipeline: Kafka records in, durable readings, dead letters and offsets out.

`IngestPipeline` (stages) runs intake, prepare and write, with the steps it is
composed with (`PipelineStep`, steps); everything else here is one part of it.
"""

from ingest.pipeline.batch import PartitionSpan, WriteBatch
from ingest.pipeline.decode_pool import DecodePool, RecordColumns
from ingest.pipeline.metrics import LATENCY_BUCKETS, ArrayHistogram, IngestMetrics
from ingest.pipeline.rows import ReadingRows
from ingest.pipeline.stages import IngestPipeline, RejectGuard, Totals
from ingest.pipeline.steps import BatchWork, PipelineStep, Written

__all__ = [
    "LATENCY_BUCKETS",
    "ArrayHistogram",
    "BatchWork",
    "DecodePool",
    "IngestMetrics",
    "IngestPipeline",
    "PartitionSpan",
    "PipelineStep",
    "ReadingRows",
    "RecordColumns",
    "RejectGuard",
    "Totals",
    "WriteBatch",
    "Written",
]
