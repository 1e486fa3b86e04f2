"""Everything that talks AMQP; the only package that imports aiormq.

- `link`: the session lifecycle (connect, declare, consume, reconnect, graceful stop).
- `topology`: declaring the route table's queues, exchanges and bindings.
- `consumer`: the source consumer of one channel; `acker`: its in-order acks.
- `publisher`: confirmed, persistent, mandatory publishes of decisions.
- `handler`: one send request from delivery to outcome (no aiormq in it).
- `connection`: opening a connection, and the backoff between attempts.
"""
