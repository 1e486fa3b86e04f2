"""`routerd.rejections`: rejected send requests recorded in a database, for customers and ops.

- `record`: a rejected delivery -> `Rejection` (pure: no broker, no database), its JSON.
- `store`: `RejectionStore`, SQLite or PostgreSQL through SQLAlchemy Core; migrations.
- `writer`: `BatchWriter`, inserts in batches and answers each delivery once committed.
- `recorder`: `routerd rejections record`, the consumer of the rejected queue.
- `listing`: `routerd rejections list`, the ops view; `api`: a page of `GET /v1/rejections`.
- `settings`: the recorder's settings over serve's, durations.

This module imports none of them, so reading a `Rejection` does not load SQLAlchemy.
See docs/rejections.md.
"""
