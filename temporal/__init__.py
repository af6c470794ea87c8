"""Stage two: read the cache, sample clips, train and evaluate temporal heads, write reports."""
