//! A request's final event (Issued, Failed, Denied), created in the background instead of inside
//! the reconcile pass that decided it.
//!
//! Why: creating the event was half of a pass's API calls (status apply + event create), and a
//! worker waited for it although nothing in the pass depends on it. issuer-lib's events go through
//! client-go's recorder, which is asynchronous too (a broadcaster goroutine writes them); events
//! are best effort in Kubernetes. Unlike client-go's broadcaster this sink never drops an event
//! when it falls behind: its queue is bounded and a full queue makes the next pass wait, so memory
//! stays bounded and a slow API server slows the controller down instead of losing events.
//!
//! Ordering: a pass reserves its event ([`EventSink::reserve`]) *before* its status write and
//! releases it ([`Ticket::commit`]) after the write succeeded; a dropped ticket (the write failed)
//! creates nothing. So the event is never created for a status that was not written, and
//! [`EventSink::flush`] — which waits for every event reserved before it — sees the event of any
//! status a reader could already observe. Shutdown flushes too ([`SinkTask::close`]), so a
//! controller stopped with SIGTERM has created every event of the passes it finished.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::Reporter;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::controllers::decision::EventOut;

/// Events reserved and not yet created, at most (then [`EventSink::reserve`] waits). About 1 KiB
/// each; a burst of finished requests is absorbed without making passes wait.
const QUEUE: usize = 1024;

/// How long [`SinkTask::close`] waits for the queued events before giving them up: an API server
/// that cannot be reached must not keep the process from exiting.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One event to create once its pass has written the status it reports.
struct Reserved {
    ev: EventOut,
    regarding: ObjectReference,
    related: Option<ObjectReference>,
    /// Resolves when the status write succeeded; an error (the ticket was dropped) cancels.
    go: oneshot::Receiver<()>,
}

enum Item {
    Event(Box<Reserved>),
    /// Answer once every event received before this one is created (or cancelled).
    Flush(oneshot::Sender<()>),
    /// As `Flush`, then stop.
    Close(oneshot::Sender<()>),
}

/// The controllers' side of the sink: reserve an event per finished request.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: mpsc::Sender<Item>,
}

/// The permission to create one reserved event; dropping it without [`Ticket::commit`] cancels it.
#[must_use = "a ticket that is dropped cancels its event"]
pub(crate) struct Ticket(Option<oneshot::Sender<()>>);

impl Ticket {
    /// The status the event reports is written: create the event.
    pub(crate) fn commit(mut self) {
        if let Some(go) = self.0.take() {
            let _ = go.send(());
        }
    }
}

/// The background task creating the events.
pub(crate) struct SinkTask {
    sink: EventSink,
    task: JoinHandle<()>,
}

impl SinkTask {
    /// Creates every event reserved so far (waiting for the passes that hold their tickets) and
    /// stops; gives up after [`CLOSE_TIMEOUT`].
    pub(crate) async fn close(self) {
        let (done, wait) = oneshot::channel();
        let drained = async {
            // A full queue makes the send wait too: both are bounded by the timeout.
            if self.sink.tx.send(Item::Close(done)).await.is_ok() {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, drained).await.is_err() {
            tracing::warn!("events still queued at shutdown were not created in time; giving them up");
        }
        self.task.abort();
    }
}

impl EventSink {
    /// Starts the sink: events are created with `client` as `reporter`, at most `in_flight` at once.
    pub(crate) fn start(client: kube::Client, reporter: Reporter, in_flight: usize) -> (EventSink, SinkTask) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(rx, client, reporter, in_flight.max(1)));
        let sink = EventSink { tx };
        (sink.clone(), SinkTask { sink, task })
    }

    /// Reserves the event `ev` on `regarding` (with the `related` object); it is created once the
    /// returned ticket is committed. Waits while the queue is full.
    pub(crate) async fn reserve(
        &self,
        ev: &EventOut,
        regarding: ObjectReference,
        related: Option<ObjectReference>,
    ) -> Ticket {
        let (go_tx, go) = oneshot::channel();
        let reserved = Reserved { ev: ev.clone(), regarding, related, go };
        if self.tx.send(Item::Event(Box::new(reserved))).await.is_err() {
            // Shut down: nothing will be created.
            tracing::debug!(reason = ev.reason, "event sink closed; event not created");
        }
        Ticket(Some(go_tx))
    }

    /// Waits until every event reserved before this call is created (or cancelled, or failed).
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Item>, client: kube::Client, reporter: Reporter, in_flight: usize) {
    let mut creating = FuturesUnordered::new();
    loop {
        tokio::select! {
            // Receive only while below the in-flight bound; the rest waits in the queue.
            item = rx.recv(), if creating.len() < in_flight => match item {
                Some(Item::Event(r)) => creating.push(create(client.clone(), &reporter, *r)),
                Some(Item::Flush(done)) => {
                    while creating.next().await.is_some() {}
                    let _ = done.send(());
                }
                Some(Item::Close(done)) => {
                    while creating.next().await.is_some() {}
                    let _ = done.send(());
                    return;
                }
                None => {
                    while creating.next().await.is_some() {}
                    return;
                }
            },
            Some(()) = creating.next(), if !creating.is_empty() => {}
        }
    }
}

/// Waits for the reserving pass's status write, then creates the event.
fn create(client: kube::Client, reporter: &Reporter, r: Reserved) -> impl Future<Output = ()> + use<> {
    let reporter = reporter.clone();
    async move {
        if r.go.await.is_err() {
            return;
        }
        let event = final_event(&reporter, &r.ev, r.regarding, r.related, Timestamp::now());
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let api: kube::Api<K8sEvent> = kube::Api::namespaced(client, &namespace);
        if let Err(e) = api.create(&Default::default(), &event).await {
            tracing::warn!(error = %e, reason = r.ev.reason, "cannot publish event");
        }
    }
}

/// The event kube's `Recorder` would create for `ev` (without its series cache: this event is
/// sent once per object, see `Shared::publish_once`).
pub(crate) fn final_event(
    reporter: &Reporter,
    ev: &EventOut,
    regarding: ObjectReference,
    related: Option<ObjectReference>,
    now: Timestamp,
) -> K8sEvent {
    let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let name = format!("{}.{:x}", regarding.name.as_deref().unwrap_or(&reporter.controller), now.as_nanosecond());
    K8sEvent {
        action: Some(ev.action.to_owned()),
        reason: Some(ev.reason.to_owned()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding),
        related,
        note: Some(crate::controllers::shared::truncate(&ev.note, 1000)),
        metadata: ObjectMeta { namespace: Some(namespace), name: Some(name), ..Default::default() },
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(reporter.instance.clone().unwrap_or_else(|| reporter.controller.clone())),
        type_: Some(if ev.warning { "Warning" } else { "Normal" }.to_owned()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::decision::EventOut;

    fn issued() -> EventOut {
        EventOut {
            warning: false,
            reason: "Issued",
            action: "Sign",
            note: "Succeeded signing the CertificateRequest".into(),
        }
    }

    fn on(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("cert-manager.io/v1".into()),
            kind: Some("CertificateRequest".into()),
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        }
    }

    fn reporter() -> Reporter {
        Reporter { controller: "demo.certbridge.io-controller".into(), instance: Some("pod-a".into()) }
    }

    async fn events(client: &kube::Client) -> Vec<K8sEvent> {
        kube::Api::<K8sEvent>::namespaced(client.clone(), "default").list(&Default::default()).await.unwrap().items
    }

    #[tokio::test]
    async fn a_committed_ticket_creates_its_event_and_a_dropped_one_nothing() {
        let sim = certbridge_testkit::KubeSim::start().await.unwrap();
        let (sink, task) = EventSink::start(sim.client(), reporter(), 2);
        let related = ObjectReference { kind: Some("DemoIssuer".into()), name: Some("ca".into()), ..on("ca") };
        sink.reserve(&issued(), on("written"), Some(related)).await.commit();
        // The status write failed: the pass drops its ticket.
        drop(sink.reserve(&issued(), on("not-written"), None).await);
        sink.flush().await;
        let evs = events(&sim.client()).await;
        assert_eq!(evs.len(), 1, "{evs:?}");
        let e = &evs[0];
        assert_eq!(e.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("written"));
        assert_eq!(e.related.as_ref().and_then(|r| r.name.as_deref()), Some("ca"));
        assert_eq!(
            (e.reason.as_deref(), e.action.as_deref(), e.type_.as_deref()),
            (Some("Issued"), Some("Sign"), Some("Normal"))
        );
        assert_eq!(e.note.as_deref(), Some("Succeeded signing the CertificateRequest"));
        assert_eq!(e.reporting_controller.as_deref(), Some("demo.certbridge.io-controller"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-a"));
        task.close().await;
    }

    #[tokio::test]
    async fn flush_waits_for_the_pass_holding_an_earlier_ticket() {
        let sim = certbridge_testkit::KubeSim::start().await.unwrap();
        let (sink, task) = EventSink::start(sim.client(), reporter(), 2);
        let ticket = sink.reserve(&issued(), on("slow-write"), None).await;
        let flushing = tokio::spawn({
            let sink = sink.clone();
            async move { sink.flush().await }
        });
        // The flush cannot end while the ticket is neither committed nor dropped.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(!flushing.is_finished(), "flush ended before the status write it depends on");
        ticket.commit();
        flushing.await.unwrap();
        assert_eq!(events(&sim.client()).await.len(), 1);
        task.close().await;
    }

    #[tokio::test]
    async fn close_creates_what_was_queued() {
        let sim = certbridge_testkit::KubeSim::start().await.unwrap();
        let (sink, task) = EventSink::start(sim.client(), reporter(), 1);
        for i in 0..5 {
            sink.reserve(&issued(), on(&format!("r{i}")), None).await.commit();
        }
        task.close().await;
        assert_eq!(events(&sim.client()).await.len(), 5);
    }
}
