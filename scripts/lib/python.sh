# The tests' Python environment: the peers the tests drive (a grpcio client generated
# from the proto, grpcurl) and the S3-compatible servers they start (SeaweedFS, moto),
# in target/test-python, made again when tests/python/requirements.txt changes.
# Sets TRANSFER_TEST_PYTHON and TRANSFER_TEST_GRPCURL. Sourced by scripts/test and
# scripts/bench.
setup_python() {
  local venv=target/test-python
  if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/python/requirements.txt "$venv/requirements.txt"; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then
      echo "$0: the tests need python3 with venv (Debian/Ubuntu: sudo apt-get install python3-venv)" >&2
      exit 1
    fi
    echo "$0: installing the Python test peers into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    cp tests/python/requirements.txt "$venv/requirements.txt"
  fi
  export TRANSFER_TEST_PYTHON="$PWD/$venv/bin/python"
  export TRANSFER_TEST_GRPCURL="$PWD/$venv/bin/grpcurl"
}
