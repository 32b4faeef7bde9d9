//! The real CQL database from `scripts/infra up cql` (Apache Cassandra; the
//! scylla driver speaks to it as to ScyllaDB): keyspace, table, prepared
//! writes, a partition read in clustering order.

use confab_e2e::{infra_env, unique_name};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_table_write_and_read() {
    let contact_points = infra_env("CQL_CONTACT_POINTS", "cql");
    let session: Session = SessionBuilder::new()
        .known_nodes(contact_points.split(',').map(str::trim))
        .connection_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("connect to the CQL database");

    let ks = unique_name("e2e_cql").replace('-', "_");
    session
        .query_unpaged(
            format!("CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"),
            &[],
        )
        .await
        .expect("create keyspace");
    session
        .query_unpaged(
            format!(
                "CREATE TABLE {ks}.messages (room text, bucket int, seq bigint, body text, \
                 PRIMARY KEY ((room, bucket), seq)) WITH CLUSTERING ORDER BY (seq DESC)"
            ),
            &[],
        )
        .await
        .expect("create table");
    session.await_schema_agreement().await.expect("schema agreement");

    let insert = session
        .prepare(format!("INSERT INTO {ks}.messages (room, bucket, seq, body) VALUES (?, ?, ?, ?)"))
        .await
        .expect("prepare insert");
    for seq in 1..=5_i64 {
        session.execute_unpaged(&insert, ("lobby", 0_i32, seq, format!("hello {seq}"))).await.expect("insert");
    }
    session
        .execute_unpaged(&insert, ("other", 0_i32, 1_i64, "elsewhere"))
        .await
        .expect("insert into another partition");

    let select = session
        .prepare(format!("SELECT seq, body FROM {ks}.messages WHERE room = ? AND bucket = ? LIMIT 3"))
        .await
        .expect("prepare select");
    let rows: Vec<(i64, String)> = session
        .execute_unpaged(&select, ("lobby", 0_i32))
        .await
        .expect("select")
        .into_rows_result()
        .expect("rows result")
        .rows::<(i64, String)>()
        .expect("typed rows")
        .collect::<Result<_, _>>()
        .expect("deserialize rows");
    assert_eq!(rows, vec![(5, "hello 5".to_string()), (4, "hello 4".to_string()), (3, "hello 3".to_string())]);

    session.query_unpaged(format!("DROP KEYSPACE {ks}"), &[]).await.expect("drop keyspace");
}
