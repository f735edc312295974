# Sourced by tests/openjdk/{prepare,run}: where OpenJDK's tests are cached.
OPENJDK_DIR=${RDMANIO_OPENJDK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rdma-nio/openjdk}
OPENJDK_TESTS=$OPENJDK_DIR/test
