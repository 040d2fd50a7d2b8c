"""Studies: training experiments that compare recipes, run as `python -m studies.<name>`.

gated_vs_plain (the attention-gated backbone against the plain one). Results:
docs/results.md.
"""
