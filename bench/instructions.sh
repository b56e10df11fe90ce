#!/usr/bin/env bash
# Instructions per call of each phase of bench/engine.py, counted by valgrind's callgrind:
# repeatable (to ~0.1 %) whatever else the machine is doing, unlike wall time on a shared VM.
# Each phase runs once and three times in separate processes; the difference, divided by
# the two extra runs' calls, is one run's cost without start-up (imports, vocabulary).
#
#   bash bench/instructions.sh [CONVERSATIONS]     (default 10 conversations of 40 turns)
set -euo pipefail
cd "$(dirname "$0")/.."
conversations="${1:-10}"
turns=40
python="${PYTHON:-.venv/bin/python}"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

count() {  # phase runs -> instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$python" bench/engine.py --only "$1" --repeat "$2" \
        --conversations "$conversations" --turns "$turns" 2>&1 |
        awk '/Collected/ {print $4}'
}

calls=$((conversations * turns))
declare -A per_call
for phase in floor analysis recount; do
    one=$(count "$phase" 1)
    three=$(count "$phase" 3)
    per_call[$phase]=$(( (three - one) / (2 * calls) ))
    printf '%-9s %12d instructions per call\n' "$phase" "${per_call[$phase]}"
done
awk -v f="${per_call[floor]}" -v a="${per_call[analysis]}" -v r="${per_call[recount]}" 'BEGIN {
    printf "analysis / floor: %.3fx; recount / analysis: %.1fx (instructions)\n", a / f, r / a }'
