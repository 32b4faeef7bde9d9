# shellcheck shell=bash
# Apache Cassandra with 3 nodes, as production runs it: replication 3
# (`confab migrate --cql-replication SimpleStrategy:3`), reads and writes at
# LOCAL_QUORUM, so one node may be down. The same jars as `cql`.
#
# The nodes listen on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all of 127/8 is
# loopback on Linux), each on the same ports: CQL on CQL3_PORT
# (CONFAB_CQL3_PORT, else CONFAB_CQL_PORT + 100: 19142), storage on
# CQL3_STORAGE_PORT (CONFAB_CQL3_STORAGE_PORT, else CONFAB_CQL_STORAGE_PORT +
# 100: 19800). One address per node rather than one address with ports per
# node: a driver learns the other nodes from system.peers, which has their
# addresses but (before peers_v2) not their ports. All three are seeds, so
# they start at once; one token each, evenly spaced, no bootstrap. Node N is
# process cql3-N (run/cql3-N.pid, log/cql3-N.log, config and data in
# cassandra3/node-N/): the drills kill single nodes, and `up cql3` starts
# again only those not running.

CQL3_PORT=${CONFAB_CQL3_PORT:-$((${CONFAB_CQL_PORT:-19042} + 100))}
CQL3_STORAGE_PORT=${CONFAB_CQL3_STORAGE_PORT:-$((${CONFAB_CQL_STORAGE_PORT:-19700} + 100))}
CQL3_HEAP=${CONFAB_CQL3_HEAP:-768m}
CQL3_DIR=$INFRA/cassandra3
CQL3_NODES=(1 2 3)
# Murmur3 tokens a third of the ring apart.
CQL3_TOKENS=(-9223372036854775808 -3074457345618258603 3074457345618258602)

cql3_address() { echo "127.0.0.$1"; }

cql3_contact_points() {
  local n out=()
  for n in "${CQL3_NODES[@]}"; do out+=("$(cql3_address "$n"):$CQL3_PORT"); done
  (IFS=,; echo "${out[*]}")
}

cql3_install() { cql_install; }

cql3_running() {
  local n
  for n in "${CQL3_NODES[@]}"; do running "cql3-$n" || return 1; done
}

# free_on ADDRESS PORT: nothing listens there.
free_on() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

cql3_start() {
  local n dir addr seeds=() out
  for n in "${CQL3_NODES[@]}"; do seeds+=("$(cql3_address "$n"):$CQL3_STORAGE_PORT"); done
  for n in "${CQL3_NODES[@]}"; do
    running "cql3-$n" && continue
    dir=$CQL3_DIR/node-$n addr=$(cql3_address "$n")
    for out in "$CQL3_PORT" "$CQL3_STORAGE_PORT"; do
      free_on "$addr" "$out" || die "cql3-$n: $addr:$out is already in use by another process (override with CONFAB_CQL3_PORT, CONFAB_CQL3_STORAGE_PORT)"
    done
    cql_write_config "$dir" "$addr" "$CQL3_PORT" "$CQL3_STORAGE_PORT" "$CQL3_HEAP" \
      "${CQL3_TOKENS[n - 1]}" "$(IFS=,; echo "${seeds[*]}")"
    say "cql3-$n: starting Cassandra $CASSANDRA_VERSION on $addr:$CQL3_PORT"
    spawn "cql3-$n" "$LOG/cql3-$n.log" "$dir" \
      java "@$dir/conf/jvm.options" -javaagent:"$(echo "$CASSANDRA_HOME"/lib/jamm-*.jar)" \
      -cp "$CASSANDRA_HOME/lib/*" org.apache.cassandra.service.CassandraDaemon
  done
}

cql3_wait() {
  local n
  for n in "${CQL3_NODES[@]}"; do
    wait_ready "cql3-$n" "$LOG/cql3-$n.log" "${CONFAB_CQL3_TIMEOUT:-300}" \
      python3 "$INFRA_SCRIPTS/infra.d/cql_ready.py" "$(cql3_address "$n")" "$CQL3_PORT"
  done
}

cql3_env() { echo "export CQL3_CONTACT_POINTS=$(cql3_contact_points)"; echo "export CQL3_RUN=$RUN"; }

cql3_stop() {
  local n pid
  for n in "${CQL3_NODES[@]}"; do
    if pid=$(pid_of "cql3-$n"); then kill -CONT "$pid" 2>/dev/null || true; fi
  done
  for n in "${CQL3_NODES[@]}"; do stop_pid "cql3-$n" 60; done
}

cql3_clean() { rm -rf "$CQL3_DIR"; }

cql3_status() {
  local n
  for n in "${CQL3_NODES[@]}"; do status_line cql3 "cql3-$n" "$(cql3_address "$n"):$CQL3_PORT"; done
}
