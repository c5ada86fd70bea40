#!/bin/sh
# Click2Dial as several workers on PostgreSQL, for side_by_side.py:
#
#   python3 ../shared/bench/side_by_side.py --system C --c2d-exe bench/c2d_workers.sh --rate 300
#
# side_by_side.py starts "<exe> serve --config FILE" with a SQLite
# configuration of its own; this switches that file to a fresh schema of
# $C2D_BENCH_POSTGRES (default: the local test database) and
# [server] workers = $C2D_WORKERS (default 2), then runs the project's click2dial.
set -eu
[ "$1" = serve ] && [ "$2" = --config ] || { echo "usage: $0 serve --config FILE" >&2; exit 2; }
config=$3
url=${C2D_BENCH_POSTGRES:-postgresql://postgres@127.0.0.1:5432/test}
schema="c2d_bench_$(date +%s%N)"
psql -q "$url" -c "CREATE SCHEMA $schema" >/dev/null
sed -i "s#^database = .*#database = \"$url?search_path=$schema\"\nworkers = ${C2D_WORKERS:-2}#" "$config"
exec "$(dirname "$0")/../.venv/bin/click2dial" "$@"
