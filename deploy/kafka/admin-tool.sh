#!/bin/sh
# Runs one of Kafka's admin tools (kafka-configs.sh, kafka-broker-api-versions.sh ...) as the admin
# principal, over the brokers' INTERNAL listener (SASL PLAIN, port 9094, reachable on the compose
# network only). The password comes from ADMIN_PASSWORD; the login file lives only while the tool runs.
#   admin-tool.sh kafka-broker-api-versions.sh --bootstrap-server localhost:9094
set -eu
: "${ADMIN_PASSWORD:?ADMIN_PASSWORD is not set}"
tool="$1"
shift
umask 077
conf="$(mktemp)"
trap 'rm -f "$conf"' EXIT
printf '%s\n' \
  "security.protocol=SASL_PLAINTEXT" \
  "sasl.mechanism=PLAIN" \
  "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"${ADMIN_PASSWORD}\";" \
  > "$conf"
"/opt/kafka/bin/$tool" --command-config "$conf" "$@"
