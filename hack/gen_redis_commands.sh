#!/usr/bin/env bash
# Print the command and subcommand names of the local redis-server (Debian's), the source
# of operator/cachetier/api/redis_commands.py's COMMANDS (COMMAND LIST names subcommands too).
set -euo pipefail
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --daemonize yes --logfile /dev/null
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true' EXIT
sleep 0.3
redis-cli -p "$port" COMMAND LIST | tr 'a-z' 'A-Z' | sort
