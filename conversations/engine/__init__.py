"""costlab's analysis engine: pure Python, no Django import (tested and benchmarked alone)."""
