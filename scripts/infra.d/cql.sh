# shellcheck shell=bash
# Apache Cassandra, one node, as the CQL database (ScyllaDB speaks the same
# protocol; the scylla crate works with both). Jars: cassandra-all and its
# runtime closure from Maven Central; runs on the machine's JDK 17.

CQL_PORT=${CONFAB_CQL_PORT:-19042}
CQL_STORAGE_PORT=${CONFAB_CQL_STORAGE_PORT:-19700}
# The test suites create a keyspace per test (and drop it after); 768m ran
# out of heap with a few dozen keyspaces alive at once.
CQL_HEAP=${CONFAB_CQL_HEAP:-2g}
CASSANDRA_HOME=$INFRA/cassandra-$CASSANDRA_VERSION # jars (cache)
CQL_DIR=$INFRA/cassandra                            # config + data
CQL_LOG=$LOG/cql.log

cql_install() {
  need_cmd python3 "the CQL readiness probe"
  [[ -f $CASSANDRA_HOME/.complete ]] && return 0
  say "cql: resolving org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION from Maven Central"
  local log=$LOG/cql-install.log
  mkdir -p "$CASSANDRA_HOME" "$LOG"
  rm -rf "${CASSANDRA_HOME:?}/lib"
  cat >"$CASSANDRA_HOME/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.confab.infra</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$CASSANDRA_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  mvn_copy_deps "$CASSANDRA_HOME/lib" "$CASSANDRA_HOME/pom.xml" "$log" ||
    fail cql "$log" "could not resolve the Cassandra jars with Maven"
  ls "$CASSANDRA_HOME/lib/cassandra-all-$CASSANDRA_VERSION.jar" >/dev/null 2>&1 ||
    fail cql "$log" "cassandra-all-$CASSANDRA_VERSION.jar missing after the Maven run"
  # Native libraries for other platforms are dead weight on the classpath.
  rm -f "$CASSANDRA_HOME"/lib/*-osx-*.jar "$CASSANDRA_HOME"/lib/*-windows-*.jar \
    "$CASSANDRA_HOME"/lib/*-linux-aarch_64.jar "$CASSANDRA_HOME"/lib/*-linux-riscv64.jar
  touch "$CASSANDRA_HOME/.complete"
}

cql_running() { running cql; }

# cql_write_config DIR ADDRESS PORT STORAGE_PORT HEAP TOKEN SEEDS: the config of
# one node (cql3.sh writes three with it).
cql_write_config() {
  local CQL_DIR=$1 addr=$2 CQL_PORT=$3 CQL_STORAGE_PORT=$4 CQL_HEAP=$5 token=$6 seeds=$7
  mkdir -p "$CQL_DIR/conf" "$CQL_DIR/data" "$CQL_DIR/triggers"
  cat >"$CQL_DIR/conf/cassandra.yaml" <<EOF
# Written by scripts/infra at every start: a node for tests on a small box.
cluster_name: confab-test
num_tokens: 1
initial_token: $token
auto_bootstrap: false
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [$CQL_DIR/data/data]
commitlog_directory: $CQL_DIR/data/commitlog
saved_caches_directory: $CQL_DIR/data/saved_caches
hints_directory: $CQL_DIR/data/hints
cdc_raw_directory: $CQL_DIR/data/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$seeds"
listen_address: $addr
rpc_address: $addr
storage_port: $CQL_STORAGE_PORT
start_native_transport: true
native_transport_port: $CQL_PORT
endpoint_snitch: SimpleSnitch
dynamic_snitch: false
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
hinted_handoff_enabled: false
concurrent_reads: 4
concurrent_writes: 4
concurrent_counter_writes: 4
concurrent_materialized_view_writes: 2
concurrent_compactors: 1
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
file_cache_size: 64MiB
key_cache_size: 8MiB
counter_cache_size: 1MiB
disk_failure_policy: stop
commit_failure_policy: stop
# Tests create and drop keyspaces often; snapshots on drop only waste disk.
auto_snapshot: false
snapshot_on_duplicate_row_detection: false
EOF
  cat >"$CQL_DIR/conf/logback.xml" <<'EOF'
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
EOF
  # JVM flags: heap sized for a 2-core box, plus the module exports/opens that
  # Cassandra needs on Java 17 (the same set its own jvm17-server.options has).
  cat >"$CQL_DIR/conf/jvm.options" <<EOF
-Xms$CQL_HEAP
-Xmx$CQL_HEAP
-Xss256k
-XX:+UseG1GC
-XX:+ParallelRefProcEnabled
-XX:MaxTenuringThreshold=1
-XX:G1HeapRegionSize=4m
-XX:MaxGCPauseMillis=300
# Every GC pause, by wall time: to tell a pause from other stalls in a latency tail.
-Xlog:gc:file=$CQL_DIR/gc.log:time,uptime:filecount=2,filesize=8m
-XX:+ExitOnOutOfMemoryError
-XX:CICompilerCount=2
-XX:MaxDirectMemorySize=256m
-Djava.awt.headless=true
-Djdk.attach.allowAttachSelf=true
--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED
--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED
--add-exports=java.sql/java.sql=ALL-UNNAMED
--add-exports=java.base/java.lang.ref=ALL-UNNAMED
--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED
--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED
--add-opens=java.base/java.lang.module=ALL-UNNAMED
--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED
--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED
--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED
--add-opens=java.base/jdk.internal.math=ALL-UNNAMED
--add-opens=java.base/jdk.internal.module=ALL-UNNAMED
--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED
--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED
--add-opens=java.base/sun.nio.ch=ALL-UNNAMED
--add-opens=java.base/java.io=ALL-UNNAMED
--add-opens=java.base/java.lang.reflect=ALL-UNNAMED
--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
--add-opens=java.base/java.lang=ALL-UNNAMED
--add-opens=java.base/java.util=ALL-UNNAMED
-Dio.netty.tryReflectionSetAccessible=true
-Dio.netty.allocator.useCacheForAllThreads=true
-Dio.netty.allocator.maxOrder=11
-Dcassandra.config=file://$CQL_DIR/conf/cassandra.yaml
-Dcassandra.storagedir=$CQL_DIR/data
-Dcassandra.logdir=$LOG
-Dcassandra.triggers_dir=$CQL_DIR/triggers
-Dcassandra-foreground=yes
-Dlogback.configurationFile=$CQL_DIR/conf/logback.xml
-Dcassandra.skip_wait_for_gossip_to_settle=0
-Dcassandra.ring_delay_ms=100
-Dcassandra.load_ring_state=false
-Dcassandra.superuser_setup_delay_ms=0
EOF
}

cql_start() {
  need_port cql "$CQL_PORT"
  need_port cql "$CQL_STORAGE_PORT"
  cql_write_config "$CQL_DIR" 127.0.0.1 "$CQL_PORT" "$CQL_STORAGE_PORT" "$CQL_HEAP" 0 "127.0.0.1:$CQL_STORAGE_PORT"
  say "cql: starting Cassandra $CASSANDRA_VERSION on 127.0.0.1:$CQL_PORT"
  spawn cql "$CQL_LOG" "$CQL_DIR" \
    java "@$CQL_DIR/conf/jvm.options" -javaagent:"$(echo "$CASSANDRA_HOME"/lib/jamm-*.jar)" \
    -cp "$CASSANDRA_HOME/lib/*" org.apache.cassandra.service.CassandraDaemon
}

cql_check() { python3 "$INFRA_SCRIPTS/infra.d/cql_ready.py" 127.0.0.1 "$CQL_PORT"; }

cql_wait() { wait_ready cql "$CQL_LOG" "${CONFAB_CQL_TIMEOUT:-240}" cql_check; }

cql_env() { echo "export CQL_CONTACT_POINTS=127.0.0.1:$CQL_PORT"; }

cql_stop() { stop_pid cql 60; }

cql_clean() { rm -rf "$CQL_DIR"; }

cql_status() { status_line cql cql "127.0.0.1:$CQL_PORT"; }
