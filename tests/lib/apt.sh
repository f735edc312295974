# Sourced by the project's set-up scripts: installs Debian packages only when missing.

# apt_retry CMD...: another apt-get may hold the dpkg lock for a while.
apt_retry() {
  local try
  for try in $(seq 1 40); do
    "$@" && return 0
    echo "apt: busy or failed, retry $try" >&2
    sleep 15
  done
  return 1
}

# apt_install_missing PKG...: installs those of PKG that are not installed yet.
apt_install_missing() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "apt: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_retry apt-get update -q
  apt_retry apt-get install -y -q --no-install-recommends "${missing[@]}"
}
