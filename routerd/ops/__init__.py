"""The ops tools: `routerd lint`, `routerd explain` and `routerd test`.

They share one contract (routerd/ops/common.py): exit codes, output formats, how paths are
shown, where problems are written, and the JSON envelope described by
routerd/ops/output.schema.json.
"""
