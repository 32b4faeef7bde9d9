# shellcheck shell=bash
# Apache Kafka as production runs it: 3 KRaft nodes on loopback, each broker
# and controller at once (3 voters), topics replicated 3 times with
# min.insync.replicas=2. The same jars as `kafka` (kafka.sh installs them).
#
# Ports: brokers on KAFKA3_PORT, +1, +2; controllers on KAFKA3_PORT+10, +11,
# +12. KAFKA3_PORT is CONFAB_KAFKA3_PORT, else CONFAB_KAFKA_PORT + 100
# (19192 by default). Node N (1 to 3) is process kafka3-N (run/kafka3-N.pid,
# log/kafka3-N.log, config and data in kafka3/node-N/): the drills SIGKILL
# and SIGSTOP single nodes, and `up kafka3` starts again only those not
# running.

KAFKA3_PORT=${CONFAB_KAFKA3_PORT:-$((${CONFAB_KAFKA_PORT:-19092} + 100))}
KAFKA3_HEAP=${CONFAB_KAFKA3_HEAP:-${CONFAB_KAFKA_HEAP:-512m}}
KAFKA3_DIR=$INFRA/kafka3
KAFKA3_NODES=(1 2 3)

kafka3_broker_port() { echo $((KAFKA3_PORT + $1 - 1)); }
kafka3_controller_port() { echo $((KAFKA3_PORT + 10 + $1 - 1)); }

kafka3_bootstrap() {
  local n out=()
  for n in "${KAFKA3_NODES[@]}"; do out+=("127.0.0.1:$(kafka3_broker_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

kafka3_install() { kafka_install; }

kafka3_running() {
  local n
  for n in "${KAFKA3_NODES[@]}"; do running "kafka3-$n" || return 1; done
}

kafka3_write_config() {
  local n=$1 dir=$KAFKA3_DIR/node-$1 voters=() m
  for m in "${KAFKA3_NODES[@]}"; do voters+=("$m@127.0.0.1:$(kafka3_controller_port "$m")"); done
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<EOF
# Written by scripts/infra at every start: node $n of 3.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(IFS=,; echo "${voters[*]}")
listeners=PLAINTEXT://127.0.0.1:$(kafka3_broker_port "$n"),CONTROLLER://127.0.0.1:$(kafka3_controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(kafka3_broker_port "$n")
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
auto.create.topics.enable=false
delete.topic.enable=true
num.partitions=1
# Production's durability settings: 3 replicas, a write is acknowledged
# (acks=all) once 2 of them have it, and only an in-sync replica may lead.
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
share.coordinator.state.topic.num.partitions=4
# A dead or frozen node is fenced (and its partitions get new leaders)
# after 6 s without a heartbeat, and leaves the ISR after 6 s behind.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
replica.lag.time.max.ms=6000
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
background.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=67108864
EOF
}

kafka3_start() {
  local n dir log id
  mkdir -p "$KAFKA3_DIR"
  cat >"$KAFKA3_DIR/log4j2.yaml" <<'EOF'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: org.apache.kafka.clients
        level: WARN
      - name: kafka.request.logger
        level: WARN
EOF
  if [[ ! -s $KAFKA3_DIR/cluster.id ]]; then
    id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$LOG/kafka3-1.log" | tail -n1) ||
      fail kafka3 "$LOG/kafka3-1.log" "kafka-storage random-uuid failed"
    echo "$id" >"$KAFKA3_DIR/cluster.id"
  fi
  id=$(<"$KAFKA3_DIR/cluster.id")
  for n in "${KAFKA3_NODES[@]}"; do
    running "kafka3-$n" && continue
    dir=$KAFKA3_DIR/node-$n log=$LOG/kafka3-$n.log
    need_port "kafka3-$n" "$(kafka3_broker_port "$n")"
    need_port "kafka3-$n" "$(kafka3_controller_port "$n")"
    kafka3_write_config "$n"
    if [[ ! -f $dir/data/meta.properties ]]; then
      say "kafka3-$n: formatting storage (cluster id $id)"
      kafka_java kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >>"$log" 2>&1 ||
        fail "kafka3-$n" "$log" "kafka-storage format failed"
    fi
    say "kafka3-$n: starting on 127.0.0.1:$(kafka3_broker_port "$n") (controller :$(kafka3_controller_port "$n"))"
    spawn "kafka3-$n" "$log" "$dir" \
      java -Xms128m -Xmx"$KAFKA3_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:+ExitOnOutOfMemoryError -XX:CICompilerCount=2 -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$KAFKA3_DIR/log4j2.yaml" -Dkafka.logs.dir="$LOG" \
      -cp "$KAFKA_HOME/lib/*" kafka.Kafka "$dir/server.properties"
  done
}

kafka3_check() {
  local n
  for n in "${KAFKA3_NODES[@]}"; do
    running "kafka3-$n" || { echo "kafka3-$n is not running: $(why_not_running "kafka3-$n")"; return 1; }
  done
  java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$KAFKA_HOME/lib/*" \
    "$INFRA_SCRIPTS/infra.d/KafkaReady.java" "$(kafka3_bootstrap)" 3
}

kafka3_wait() {
  local deadline=$(($(now) + ${CONFAB_KAFKA3_TIMEOUT:-180})) n out
  while true; do
    if out=$(kafka3_check 2>&1); then
      printf '%s ready: %s\n' "$(date -u +%FT%TZ)" "$out" >>"$LOG/kafka3-1.log"
      return 0
    fi
    for n in "${KAFKA3_NODES[@]}"; do
      running "kafka3-$n" ||
        fail "kafka3-$n" "$LOG/kafka3-$n.log" "process exited before it was ready: $(why_not_running "kafka3-$n")"
    done
    if (($(now) >= deadline)); then
      fail kafka3 "$LOG/kafka3-1.log" "not ready after ${CONFAB_KAFKA3_TIMEOUT:-180}s (last check: ${out:0:300})"
    fi
    sleep 1
  done
}

kafka3_env() {
  echo "export KAFKA3_BOOTSTRAP=$(kafka3_bootstrap)"
  # Node N's pid is in \$KAFKA3_RUN/kafka3-N.pid (the drills signal single nodes).
  echo "export KAFKA3_RUN=$RUN"
}

kafka3_stop() {
  local n pid
  # A node frozen by a drill (SIGSTOP) cannot take SIGTERM until continued.
  # All at once: the last node alone cannot finish a controlled shutdown
  # (no quorum left) and would wait out the 60 s before its SIGKILL.
  for n in "${KAFKA3_NODES[@]}"; do
    if pid=$(pid_of "kafka3-$n"); then kill -CONT "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for n in "${KAFKA3_NODES[@]}"; do stop_pid "kafka3-$n" 60; done
}

kafka3_clean() { rm -rf "$KAFKA3_DIR"; }

kafka3_status() {
  local n
  for n in "${KAFKA3_NODES[@]}"; do
    status_line kafka3 "kafka3-$n" "127.0.0.1:$(kafka3_broker_port "$n") (controller :$(kafka3_controller_port "$n"))"
  done
}
