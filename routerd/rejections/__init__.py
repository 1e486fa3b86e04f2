"""`routerd.rejections`: rejected send requests recorded in a database, for customers and ops.

- `record`: a rejected delivery -> `Rejection` (pure: no broker, no database).
- `store`: `RejectionStore`, SQLite or PostgreSQL through SQLAlchemy Core; migrations.
- `writer`: `BatchWriter`, inserts in batches and answers each delivery once committed.
- `recorder`: `routerd rejections record`, the consumer of the rejected queue.
- `listing`: `routerd rejections list`, the ops view.
See docs/rejections.md.
"""
