"""Write paths of conversations, one module per concern:

- `usage`: the usage records of one turn (estimated and reported), priced from the book;
- `transcripts`: analysed transcripts stored as conversations, messages, turns and usage;
- `imports`: import jobs, from upload or command line to their all-or-nothing outcome;
- `rollups`: the daily and per-conversation sums pages read, kept in the writers' transactions;
- `deletion`: conversations and organizations with their rows, files and cache entries.

Price-book writes (LiteLLM imports, re-pricing) live in `pricing.services`.
"""
