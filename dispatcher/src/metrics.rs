//! The dispatcher's metrics, registered in the process's one registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub records: IntCounterVec,
    pub batch_size: Histogram,
    pub fanout: Histogram,
    pub push_batches: IntCounter,
    pub push_batch_size: Histogram,
    pub push_duration: Histogram,
    pub batch_duration: Histogram,
    pub push_errors: IntCounter,
    pub push_link_failures: IntCounterVec,
    pub store_retries: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub duplicates: IntCounter,
    pub route_catchups: IntCounter,
}

impl Metrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics {
            records: IntCounterVec::new(
                Opts::new("confab_dispatcher_records_total", "Ingress records processed, by command and outcome."),
                &["command", "outcome"],
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("confab_dispatcher_batch_records", "Records per group commit.")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
            )?,
            fanout: Histogram::with_opts(
                HistogramOpts::new("confab_push_fanout_gateways", "Gateways one room event is pushed to.")
                    .buckets(vec![0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0]),
            )?,
            push_batches: IntCounter::new("confab_push_batches_total", "Batches of deliveries pushed to gateways.")?,
            push_batch_size: Histogram::with_opts(
                HistogramOpts::new("confab_push_batch_deliveries", "Deliveries in one push to one gateway.")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
            )?,
            push_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "confab_push_duration_seconds",
                    "Time of one push to one gateway, failures included.",
                )
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            )?,
            batch_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "confab_dispatcher_batch_duration_seconds",
                    "Time to process one batch of ingress records: decide, group commit (retries included) and push.",
                )
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0]),
            )?,
            push_errors: IntCounter::new(
                "confab_push_errors_total",
                "Pushes that failed because the gateway was gone.",
            )?,
            push_link_failures: IntCounterVec::new(
                Opts::new(
                    "confab_push_link_failures_total",
                    "Failed attempts to open or keep a push link to a gateway, by reason: connect, tls (the \
                     gateway's certificate is not trusted for its announced address), refused, broken.",
                ),
                &["reason"],
            )?,
            store_retries: IntCounter::new(
                "confab_dispatcher_store_retries_total",
                "Group commits retried because the store failed; the batch is neither acked nor committed meanwhile.",
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "confab_consumer_lag_records",
                    "Ingress records this dispatcher has not consumed yet (high watermark minus its position), \
                     per partition it owns; refreshed every 10 s.",
                ),
                &["partition"],
            )?,
            duplicates: IntCounter::new(
                "confab_dispatcher_duplicate_sends_total",
                "Sends answered with an earlier message because their (room, cid) was stored before.",
            )?,
            route_catchups: IntCounter::new(
                "confab_dispatcher_route_catchups_total",
                "Rooms whose newest message event was pushed again to a gateway that just started hosting them \
                 (a message stored while its announcement was on the way would otherwise reach its sessions \
                 only with the room's next message).",
            )?,
        };
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.fanout.clone()))?;
        registry.register(Box::new(m.push_batches.clone()))?;
        registry.register(Box::new(m.push_batch_size.clone()))?;
        registry.register(Box::new(m.push_duration.clone()))?;
        registry.register(Box::new(m.batch_duration.clone()))?;
        registry.register(Box::new(m.push_errors.clone()))?;
        registry.register(Box::new(m.push_link_failures.clone()))?;
        registry.register(Box::new(m.store_retries.clone()))?;
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.route_catchups.clone()))?;
        Ok(m)
    }
}
