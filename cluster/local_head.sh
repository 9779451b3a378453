#!/usr/bin/env bash
# A local Ray head on this machine, for `ray job submit`:
#
#   cluster/local_head.sh start        # prints the RAY_ADDRESS to use
#   RAY_ADDRESS=http://127.0.0.1:8265 ray job submit --working-dir . -- python jobs/train_text.py
#   cluster/local_head.sh stop
#
# The dashboard and the job server bind to 127.0.0.1 only: an open job API is remote code execution for
# anyone who can reach it. Ray's token authentication stays on (Ray >= 2.60 writes ~/.ray/auth_token on
# the first start); CLI clients need RAY_AUTH_MODE=token as well. `stop` runs `ray stop`, which stops every
# Ray process of this user on the machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# jobs run `python`: make it the project's environment for the head and everything it starts
if [ -x "$ROOT/.venv/bin/python" ]; then
    export PATH="$ROOT/.venv/bin:$PATH"
fi
PORT=${RAY_HEAD_PORT:-6379}
DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
NUM_CPUS=${RAY_NUM_CPUS:-$(nproc)}

case "${1:-}" in
  start)
    ray start --head --port="$PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
        --num-cpus="$NUM_CPUS" --disable-usage-stats
    echo
    echo "Ray head started. Submit jobs with:"
    echo "  export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT RAY_AUTH_MODE=\${RAY_AUTH_MODE:-token}"
    echo "  ray job submit --working-dir . -- python jobs/train_text.py"
    ;;
  stop)
    ray stop
    ;;
  status)
    ray status --address="127.0.0.1:$PORT"
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
