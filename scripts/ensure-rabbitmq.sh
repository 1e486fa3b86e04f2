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
rabbitmqctl await_startup --timeout 120
for _ in $(seq 1 60); do
    port_open && exit 0
    sleep 1
done
echo "RabbitMQ started but 127.0.0.1:5672 does not answer; see rabbitmq logs." >&2
exit 1
