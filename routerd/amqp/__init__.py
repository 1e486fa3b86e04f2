"""The broker adapter: everything that talks AMQP; the only package that imports aiormq.

- `link`: the session lifecycle (connect, declare, consume, reconnect, graceful stop).
- `options`: `BrokerOptions`, the connection's options (URL, heartbeat, TLS files,
  timeouts, backoff), built once by the settings.
- `connection`: opening a connection, and the backoff between attempts.
- `topology`: declaring the route table's queues, exchanges and bindings.
- `consumer`: the source consumer of one channel, delivery -> `routerd.delivery.Delivery`;
  `acker`: its in-order acks.
- `publisher`: confirmed, persistent, mandatory publishes of decisions; aiormq's answers
  become `routerd.delivery` errors.
- `sender`: `SourceSender`, routerd.client's reconnecting confirm channel to the source.

What to do with a delivery (decide, publish, settle) is `routerd.delivery`'s, not this
package's.
"""
