# Sourced by scripts/schemathesis.sh and scripts/moto.sh: makes (once) a
# virtualenv outside the clone, keyed by the pinned requirement, and sets
# $venv to it. Usage: pyvenv NAME VERSION REQUIREMENT
pyvenv() {
  local name=$1 version=$2 requirement=$3
  local cache=${BERTH_CACHE:-/var/cache/berth}
  venv=$cache/venv/$name-$version
  if [ ! -f "$venv/.complete" ]; then
    mkdir -p "$cache/venv"
    exec 9>"$cache/venv/.lock"
    flock 9
    if [ ! -f "$venv/.complete" ]; then
      echo "$name: installing $version into $venv" >&2
      rm -rf "$venv"
      # Built in place: a venv's scripts name its own path.
      local py=/usr/bin/python3 # Debian's (python3-venv), whatever else is on PATH
      [ -x "$py" ] || py=python3
      "$py" -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check "$requirement"
      touch "$venv/.complete"
    fi
    exec 9>&-
  fi
}
