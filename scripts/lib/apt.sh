# apt_install PKG...: apt-get update, then install PKG..., as root or through sudo.
# Sourced by the install scripts.
#
# A user's machine often runs another apt at the same time (unattended-upgrades, a
# package manager window), which holds the dpkg lock or the package lists lock. Both
# are waited for, up to APT_LOCK_WAIT seconds (default 600), instead of failing at
# once: DPkg::Lock::Timeout makes apt-get wait for the dpkg lock, but apt-get update
# (apt 2.6, Debian 12) still fails at once on the lists lock, so that is retried here.

apt_install() {
  local wait="${APT_LOCK_WAIT:-600}"
  local retry="${APT_LOCK_RETRY_SECONDS:-5}"
  local sudo=
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  local lock=(-o "DPkg::Lock::Timeout=$wait")
  local deadline=$((SECONDS + wait)) said= err
  # LC_ALL=C: the lock message is matched below.
  until err=$($sudo env LC_ALL=C apt-get "${lock[@]}" update -qq 2>&1 >/dev/null); do
    if [[ "$err" != *"Could not get lock"* ]] || ((SECONDS >= deadline)); then
      echo "$err" >&2
      return 1
    fi
    if [ -z "$said" ]; then
      echo "another apt holds the package lists lock; waiting up to ${wait}s" >&2
      said=1
    fi
    sleep "$retry"
  done
  [ -z "$err" ] || echo "$err" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${lock[@]}" install -y -qq "$@" >/dev/null
}

# apt_download PKG DIR: fetch PKG's .deb into DIR without installing it, for a package
# whose dependencies this machine cannot take (the caller unpacks what it needs).
apt_download() {
  local pkg="$1" dir="$2"
  # apt fetches as its own unprivileged user, which must be able to write there.
  chmod 777 "$dir"
  (cd "$dir" && apt-get download -qq "$pkg")
}
