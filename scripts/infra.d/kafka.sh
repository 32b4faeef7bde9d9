# shellcheck shell=bash
# Apache Kafka, KRaft mode, one node that is broker and controller at once.
# Jars: org.apache.kafka:kafka_2.13 and its runtime closure from Maven Central.

KAFKA_PORT=${CONFAB_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${CONFAB_KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP=${CONFAB_KAFKA_HEAP:-512m}
KAFKA_HOME=$INFRA/kafka-$KAFKA_VERSION # jars (cache, keyed by version)
KAFKA_DIR=$INFRA/kafka                 # config + data of the running node
KAFKA_LOG=$LOG/kafka.log

kafka_install() {
  [[ -f $KAFKA_HOME/.complete ]] && return 0
  say "kafka: resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven Central"
  local log=$LOG/kafka-install.log
  mkdir -p "$KAFKA_HOME" "$LOG"
  rm -rf "${KAFKA_HOME:?}/lib"
  cat >"$KAFKA_HOME/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.confab.infra</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$KAFKA_LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  mvn_copy_deps "$KAFKA_HOME/lib" "$KAFKA_HOME/pom.xml" "$log" ||
    fail kafka "$log" "could not resolve the Kafka jars with Maven"
  ls "$KAFKA_HOME/lib/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null 2>&1 ||
    fail kafka "$log" "kafka_2.13-$KAFKA_VERSION.jar missing after the Maven run"
  touch "$KAFKA_HOME/.complete"
}

kafka_running() { running kafka; }

kafka_java() {
  java -Xms128m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.yaml" \
    -Dkafka.logs.dir="$LOG" -Dinfra.dir="$INFRA" \
    -cp "$KAFKA_HOME/lib/*" "$@"
}

kafka_start() {
  need_port kafka "$KAFKA_PORT"
  need_port kafka "$KAFKA_CONTROLLER_PORT"
  mkdir -p "$KAFKA_DIR/data"
  cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by scripts/infra at every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DIR/data
auto.create.topics.enable=false
delete.topic.enable=true
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=4
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=67108864
EOF
  cat >"$KAFKA_DIR/log4j2.yaml" <<'EOF'
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
  if [[ ! -f $KAFKA_DIR/data/meta.properties ]]; then
    local id
    id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$KAFKA_LOG" | tail -n1) ||
      fail kafka "$KAFKA_LOG" "kafka-storage random-uuid failed"
    say "kafka: formatting storage (cluster id $id)"
    kafka_java kafka.tools.StorageTool format -t "$id" -c "$KAFKA_DIR/server.properties" >>"$KAFKA_LOG" 2>&1 ||
      fail kafka "$KAFKA_LOG" "kafka-storage format failed"
  fi
  say "kafka: starting on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT)"
  spawn kafka "$KAFKA_LOG" "$KAFKA_DIR" \
    java -Xms256m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.yaml" -Dkafka.logs.dir="$LOG" \
    -cp "$KAFKA_HOME/lib/*" kafka.Kafka "$KAFKA_DIR/server.properties"
}

kafka_check() {
  java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$KAFKA_HOME/lib/*" \
    "$INFRA_SCRIPTS/infra.d/KafkaReady.java" "127.0.0.1:$KAFKA_PORT"
}

kafka_wait() { wait_ready kafka "$KAFKA_LOG" "${CONFAB_KAFKA_TIMEOUT:-120}" kafka_check; }

kafka_env() { echo "export KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"; }

kafka_stop() { stop_pid kafka 60; }

kafka_clean() { rm -rf "$KAFKA_DIR"; }

kafka_status() { status_line kafka kafka "127.0.0.1:$KAFKA_PORT"; }
