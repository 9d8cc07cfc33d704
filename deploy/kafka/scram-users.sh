#!/bin/sh
# Sets the SCRAM-SHA-512 credential of every receiptflow principal on the compose cluster (idempotent:
# run on every `compose up`, so a changed password in deploy/.env takes effect). Each principal's
# password comes from <NAME>_PASSWORD (admin from ADMIN_PASSWORD); the ACLs are `receiptflow topics
# create`'s, applied next by the topics service as admin.
set -eu
here="$(dirname "$0")"
bootstrap="${BOOTSTRAP:-kafka-1:9094}"
for pair in admin:ADMIN_PASSWORD router:ROUTER_PASSWORD profiles:PROFILES_PASSWORD \
            aggregator:AGGREGATOR_PASSWORD sink:SINK_PASSWORD registers:REGISTERS_PASSWORD \
            consent-writer:CONSENT_WRITER_PASSWORD support:SUPPORT_PASSWORD; do
  user="${pair%%:*}"
  var="${pair#*:}"
  password="$(printenv "$var" || true)"
  if [ -z "$password" ]; then
    echo "scram-users.sh: $var is not set (the password of the Kafka principal $user)" >&2
    exit 1
  fi
  case "$password" in
    *[\ ,\[\]\"\;=]*) echo "scram-users.sh: $var holds a character kafka-configs cannot take (space , [ ] \" ; =)" >&2; exit 1 ;;
  esac
  sh "$here/admin-tool.sh" kafka-configs.sh --bootstrap-server "$bootstrap" --alter --entity-type users \
    --entity-name "$user" --add-config "SCRAM-SHA-512=[iterations=8192,password=$password]" >/dev/null
  echo "SCRAM-SHA-512 credential set for $user"
done
