# Sourced by the shell scripts that take arguments, after they set `usage` (the usage line, without
# "usage: "): a bad argument is one line naming it, then the usage line, and exit 2, before any work.
# (The TypeScript entry points have their own: examples/cli.ts.) Messages start with the script's
# path as the usage line gives it.
#   usage="bash scripts/gpu/ab.sh [--rounds N] ..."; . scripts/args.sh
#   case "$1" in --rounds) need_value "$@"; rounds=$2; shift 2 ;; *) unknown_arg "$1" ;; esac
args_name=${usage:-bash $0}
args_name=${args_name#bash }
args_name=${args_name%% *}
usage_error() {  # usage_error <why>: says why and how the script is used, exits 2
  echo "$args_name: $1" >&2
  echo "usage: ${usage:-bash $0}" >&2
  exit 2
}
need_value() {  # need_value "$@": in a flag loop before reading $2; a flag ($1) with no value after it is refused
  [ $# -ge 2 ] && [[ "$2" != --* ]] || usage_error "$1 needs a value"
}
need_count() {  # need_count "$@": like need_value, and the value must be a whole number
  need_value "$@"
  [[ "$2" =~ ^[0-9]+$ ]] || usage_error "$1 takes a whole number, got '$2'"
}
need_positive() {  # need_positive <what> <value>: a positional whole number from 1, else refused naming <what>
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || usage_error "$1 must be a whole number, got '$2'"
}
unknown_arg() {  # unknown_arg <argument>
  usage_error "unknown argument '$1'"
}
no_args() {  # no_args "$@": for a script that takes none
  [ $# -eq 0 ] || usage_error "takes no arguments, got '$*'"
}
