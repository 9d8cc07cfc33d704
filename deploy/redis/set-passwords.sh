#!/bin/sh
# Renders users.acl (the roles, committed without any password) into a file redis-server loads with
# `aclfile`: each role is switched on with the SHA-256 of its password, so the output holds hashes only.
#
#   PROFILE_WRITER_PASSWORD=... MARKETING_READER_PASSWORD=... \
#     deploy/redis/set-passwords.sh [users.acl] > /etc/redis/users.acl
#
# A role whose password variable is unset or empty stays off. The default user stays off: a client
# that does not authenticate (a register, say) cannot run any command.
set -eu
src=${1:-$(dirname "$0")/users.acl}
[ -r "$src" ] || { echo "cannot read $src" >&2; exit 2; }

hash() {
    # printf is a shell builtin: the password never appears on a command line.
    printf '%s' "$1" | sha256sum | cut -d' ' -f1
}

script=""
if [ -n "${PROFILE_WRITER_PASSWORD:-}" ]; then
    script="$script;s/^user profile-writer off resetpass /user profile-writer on resetpass #$(hash "$PROFILE_WRITER_PASSWORD") /"
fi
if [ -n "${MARKETING_READER_PASSWORD:-}" ]; then
    script="$script;s/^user marketing-reader off resetpass /user marketing-reader on resetpass #$(hash "$MARKETING_READER_PASSWORD") /"
fi
sed -e "${script#;}" "$src"
