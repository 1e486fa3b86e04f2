#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on 127.0.0.1:5672; start the local one if it is down.
set -euo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if port_open; then
    exit 0
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "No RabbitMQ answers on 127.0.0.1:5672 and rabbitmq-server is not installed." >&2
    echo "Install it (Debian: apt-get install rabbitmq-server) or point ROUTERD_AMQP_URL at a broker." >&2
    exit 1
fi
echo "Starting the local RabbitMQ (rabbitmq-server -detached)..." >&2
rabbitmq-server -detached || true
# `-detached` returns before the node registers with epmd, and `await_startup` fails at
# once on a node it cannot reach yet: retry until it answers, for two minutes at most.
for _ in $(seq 1 120); do
    if rabbitmqctl await_startup --timeout 120 >/dev/null 2>&1 && port_open; then
        echo "RabbitMQ is up." >&2
        exit 0
    fi
    sleep 1
done
echo "RabbitMQ did not come up on 127.0.0.1:5672 within two minutes;" >&2
echo "see /var/log/rabbitmq/ and 'rabbitmqctl status'." >&2
exit 1
