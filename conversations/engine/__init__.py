"""costlab's analysis engine: pure Python, no Django import (tested and benchmarked alone).

types       Transcript, Call, Usage: what parsers produce and the engine reads
pricing     usage buckets and the money maths
tokens      offline tiktoken encodings, ModelProfile, count_request (cookbook rules)
images      image_url token rule
render      requests as token sequences, each message encoded once (TranscriptRenderer)
cache       CacheSimulator: prompt caching with a reason for every miss
analysis    analyze(): every call's tokens, simulated caching and cost
metrics     hit rates, cost and latency reduction, reference targets
strategies  full / window / trim / summarize compared on one transcript
projection  cost of the next N turns
report      analysis_to_json(), render_table()
"""
