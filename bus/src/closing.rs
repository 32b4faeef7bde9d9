//! A value dropped on a thread of its own, so that a drop that blocks
//! (librdkafka's consumer close) neither blocks a tokio worker nor, when it
//! blocks for good, its caller.

use std::time::Duration;

/// A value dropped on a thread of its own, waited for at most `wait`: an
/// ingress consumer. librdkafka's close blocks, which a tokio worker must
/// not, and it can block for good when a rebalance lands in it:
/// `rd_kafka_rebalance_protocol` then waits on an operation nothing serves
/// (confluentinc/librdkafka#4041, fede1024/rust-rdkafka#509; seen in a CI
/// run, where a test cluster's teardown hung for 15 minutes). A close that
/// does not end in time is left to its thread, and the caller goes on.
pub(crate) struct Closing<T: Send + 'static> {
    value: Option<T>,
    wait: Duration,
}

impl<T: Send + 'static> Closing<T> {
    pub(crate) fn new(value: T, wait: Duration) -> Self {
        Closing { value: Some(value), wait }
    }
}

impl<T: Send + 'static> std::ops::Deref for Closing<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("only drop takes the value")
    }
}

impl<T: Send + 'static> Drop for Closing<T> {
    fn drop(&mut self) {
        let Some(value) = self.value.take() else { return };
        let (done, closed) = std::sync::mpsc::channel::<()>();
        let closing = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
            drop(value);
            let _ = done.send(());
        });
        // Without a thread the value was dropped here, with the closure.
        if closing.is_ok() && closed.recv_timeout(self.wait).is_err() {
            tracing::warn!(wait = ?self.wait, "a Kafka consumer did not close in time; left to close by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    /// A value whose drop blocks until told to go on.
    struct Stuck(std::sync::mpsc::Receiver<()>);

    impl Drop for Stuck {
        fn drop(&mut self) {
            let _ = self.0.recv();
        }
    }

    #[test]
    fn a_close_that_hangs_does_not_hang_its_caller() {
        let (go_on, stuck) = std::sync::mpsc::channel();
        drop(super::Closing::new(Stuck(stuck), std::time::Duration::from_millis(50)));
        // Reached: the caller went on while the close still waits.
        go_on.send(()).expect("the close is still waiting");
    }

    #[test]
    fn a_close_that_ends_is_waited_for() {
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                std::thread::sleep(std::time::Duration::from_millis(20));
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        drop(super::Closing::new(Flag(closed.clone()), std::time::Duration::from_secs(60)));
        assert!(closed.load(std::sync::atomic::Ordering::SeqCst), "dropped before the close ended");
    }
}
