#!/bin/sh
# Renders users.acl (the roles, committed without any password) into a file redis-server loads with
# `aclfile`: each role is switched on with the SHA-256 of its password, so the output holds hashes only.
#
#   PROFILE_WRITER_PASSWORD=... MARKETING_READER_PASSWORD=... SUPPORT_PASSWORD=... CUSTOMER_READER_PASSWORD=... \
#     DLQ_VAULT_PASSWORD=... [WEB_SESSIONS_PASSWORD=...] [ADMIN_PASSWORD=...] [AUDITOR_PASSWORD=...] \
#     deploy/redis/set-passwords.sh [users.acl] > /etc/redis/users.acl
#
# A role whose password variable is unset or empty stays off. The default user stays off: a client
# that does not authenticate (a register, say) cannot run any command. The embedded stack renders
# the same file itself, with passwords generated per install (receiptflow.redis_auth).
set -eu
src=${1:-$(dirname "$0")/users.acl}
[ -r "$src" ] || { echo "cannot read $src" >&2; exit 2; }

hash() {
    # printf is a shell builtin: the password never appears on a command line.
    printf '%s' "$1" | sha256sum | cut -d' ' -f1
}

script=""
on() {  # on USER PASSWORD
    if [ -n "$2" ]; then
        script="$script;s/^user $1 off resetpass /user $1 on resetpass #$(hash "$2") /"
    fi
}
on profile-writer "${PROFILE_WRITER_PASSWORD:-}"
on marketing-reader "${MARKETING_READER_PASSWORD:-}"
on support "${SUPPORT_PASSWORD:-}"
on web-sessions "${WEB_SESSIONS_PASSWORD:-}"
on customer-reader "${CUSTOMER_READER_PASSWORD:-}"
on admin "${ADMIN_PASSWORD:-}"
on dlq-vault "${DLQ_VAULT_PASSWORD:-}"
on auditor "${AUDITOR_PASSWORD:-}"
sed -e "${script#;}" "$src"
