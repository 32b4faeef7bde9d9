//! The dispatcher's metrics, registered in the process's one registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub records: IntCounterVec,
    pub batch_size: Histogram,
    pub fanout: Histogram,
    pub push_batches: IntCounter,
    pub push_errors: IntCounter,
    pub store_retries: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub duplicates: IntCounter,
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
            push_errors: IntCounter::new(
                "confab_push_errors_total",
                "Pushes that failed because the gateway was gone.",
            )?,
            store_retries: IntCounter::new(
                "confab_dispatcher_store_retries_total",
                "Group commits retried because the store failed; the batch is neither acked nor committed meanwhile.",
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new("confab_consumer_lag_records", "Ingress records not yet committed, per partition."),
                &["partition"],
            )?,
            duplicates: IntCounter::new(
                "confab_dispatcher_duplicate_sends_total",
                "Sends answered with an earlier message because their (room, cid) was stored before.",
            )?,
        };
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.fanout.clone()))?;
        registry.register(Box::new(m.push_batches.clone()))?;
        registry.register(Box::new(m.push_errors.clone()))?;
        registry.register(Box::new(m.store_retries.clone()))?;
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        Ok(m)
    }
}
