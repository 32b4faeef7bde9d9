// Kafka readiness probe, run with the broker's own classpath in Java's
// single-file source mode:  java -cp 'lib/*' KafkaReady.java 127.0.0.1:19092 [BROKERS]
// Ready means: a metadata request names a controller and BROKERS brokers (1
// when not given), and a topic replicated BROKERS times can be created and
// deleted (so the controller quorum works and every broker takes replicas).
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "8000");
        p.put(AdminClientConfig.RETRIES_CONFIG, "0");
        int brokers = args.length > 1 ? Integer.parseInt(args[1]) : 1;
        String topic = "__confab_infra_probe";
        try (Admin admin = Admin.create(p)) {
            var cluster = admin.describeCluster();
            var nodes = cluster.nodes().get(8, TimeUnit.SECONDS);
            var controller = cluster.controller().get(8, TimeUnit.SECONDS);
            if (nodes.size() < brokers || controller == null) {
                System.err.println(nodes.size() + " of " + brokers + " brokers in metadata, controller " + controller);
                System.exit(1);
            }
            try {
                admin.createTopics(List.of(new NewTopic(topic, 1, (short) brokers))).all().get(8, TimeUnit.SECONDS);
            } catch (java.util.concurrent.ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) throw e;
            }
            admin.deleteTopics(List.of(topic)).all().get(8, TimeUnit.SECONDS);
            System.out.println("cluster " + cluster.clusterId().get() + ", brokers " + nodes.size() + ", controller " + controller.id());
        } catch (Exception e) {
            System.err.println("not ready: " + e);
            System.exit(1);
        }
    }
}
