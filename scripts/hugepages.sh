# scripts/hugepages.sh: sourced (POSIX sh) by scripts/test.sh, scripts/bench.sh and the shell
# tests; the one way the scripts read a hugepage count they will compare or write back.
#
# dk_hp_persistent DIR: the persistent pages of DIR (a /sys/kernel/mm/hugepages/hugepages-*
# folder), nr_hugepages less surplus_hugepages. The two files are read as a pair until two
# pairs in a row agree: another process's surplus pages come and go between any two reads,
# and a mixed pair is off by those pages (writing it back to nr_hugepages would keep them).
dk_hp_persistent() {
  _dk_hp_prev=; _dk_hp_i=0
  while [ $_dk_hp_i -lt 100 ]; do
    _dk_hp_now="$(cat "$1/nr_hugepages") $(cat "$1/surplus_hugepages")"
    [ "$_dk_hp_now" = "$_dk_hp_prev" ] && break
    _dk_hp_prev=$_dk_hp_now; _dk_hp_i=$((_dk_hp_i + 1))
  done
  echo $(( ${_dk_hp_now% *} - ${_dk_hp_now#* } ))
}

# dk_hp_value FILE: a limit's value as it should be saved and put back: for nr_hugepages the
# persistent pages (writing nr_hugepages sets those), any other file as it reads.
dk_hp_value() {
  case $1 in
    */nr_hugepages) dk_hp_persistent "${1%/*}" ;;
    *) cat "$1" ;;
  esac
}
