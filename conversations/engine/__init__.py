"""costlab's analysis engine: pure Python, no Django import (tested and benchmarked alone).

compiled     which modules mypyc may build (bin/compile), and whether a build is used
types        Transcript, Call, Usage: what parsers produce and the engine reads
pricing      usage buckets and the money maths
vocabulary   the tiktoken encodings, read offline from the bpe-openai wheel and hash-checked
profiles     ModelProfile: every per-model fact (encoding, chat overheads, limits)
sequences    token ids (real and placeholder) and their packed int32 form
images       image_url token rule
schemas      tool definitions as the TypeScript-like text the API renders them into
messages     a message -> its tokens (cookbook rules); MessageTokens: a transcript's, once each
cache_policy CachePolicy: each model family's caching rules as data, default_policy()
cache        CacheSimulator: prefix caching (seed 002) with a reason for every miss
breakpoints  BreakpointSimulator: caching at breakpoints, exact lengths, billed writes (GPT-5.6)
render       a request -> its token sequence (tools, format, messages, priming): count_request,
             TranscriptRenderer (each message encoded once, each block hashed once)
metrics      hit rates, cost and latency reduction, reference targets
analysis     analyze(): every call's tokens, simulated caching and cost; analyze_next():
             a transcript's next call alone, from the state its earlier calls left
strategies   full / window / trim / summarize compared on one transcript
calibration  estimated vs reported prompt tokens and cached tokens, per model
levers       prompt_cache_key, retention and breakpoint choices compared, writes priced
projection   cost of the next N turns
divergence   where two requests' prefixes part, side by side, and the cause named
fixes        the cache fixes of an organization's calls, each re-simulated with its saving
report       analysis_to_json(), render_table()

Each module imports only modules listed above it (tests/engine/test_layout.py checks it): no
two modules import each other, and none calls back into the module that called it.
"""

from . import compiled

# A fresh build of the hot modules, if any, is imported in place of their sources.
compiled.extend(__path__, __name__)
