//! The reporter's two tasks: the link (rumqttc's event loop, reconnecting with backoff and
//! jitter) and the publisher (what to send, and when).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::Feeds;
use super::connect::{CONNECTION_TIMEOUT_SECS, MAX_MESSAGE};
use super::debounce::Debounce;
use super::document::{Snapshot, Topics};
use crate::identity::HostIdentity;
use crate::metrics::{KindLabel, ReportMetrics};
use crate::registry::retry::RetryPolicy;
use crate::status::EventRecord;

/// A burst of status changes is one message: sent once quiet this long ...
const QUIET: Duration = Duration::from_millis(200);
/// ... and never later than this after the first change.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// Requests handed to rumqttc and not yet written: all a stalled link can make us hold
/// besides the in-flight window.
const REQUEST_CAPACITY: usize = 16;
/// When the request queue was full, try the status again this much later.
const RETRY_FULL: Duration = Duration::from_secs(1);
/// Reconnects: full jitter between a tenth of the ceiling and the ceiling, which doubles
/// from 1 s to 20 s, so a fleet whose broker comes back does not reconnect at once.
const RECONNECT: RetryPolicy = RetryPolicy {
    attempts: u32::MAX,
    base: Duration::from_secs(1),
    max: Duration::from_secs(20),
};
/// How long a clean stop may take to say "offline" to the broker.
const GOODBYE: Duration = Duration::from_secs(2);

pub struct Settings {
    pub topics: Topics,
    pub id: HostIdentity,
    pub interval: Duration,
    /// The broker's URL, for logs.
    pub broker: String,
}

/// The link as the publisher sees it: up (and which connection), or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    Up(u64),
}

pub async fn run(
    options: MqttOptions,
    settings: Settings,
    feeds: Feeds,
    metrics: ReportMetrics,
    stop: oneshot::Receiver<()>,
) {
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    eventloop
        .network_options
        .set_connection_timeout(CONNECTION_TIMEOUT_SECS);
    let (link_tx, link) = watch::channel(Link::Down);
    let driver = tokio::spawn(drive(
        eventloop,
        link_tx,
        metrics.clone(),
        settings.broker.clone(),
    ));
    let mut p = Publisher {
        client,
        settings,
        metrics,
        link,
        last_sent: None,
    };
    p.run(feeds, stop).await;
    if p.up() {
        let _ = p
            .client
            .try_publish(&p.settings.topics.online, QoS::AtLeastOnce, true, "false");
        let _ = p.client.try_disconnect();
        let _ = tokio::time::timeout(GOODBYE, driver).await;
    } else {
        driver.abort();
    }
}

/// Polls the session for ever: connects, reconnects after a failure with backoff and jitter,
/// and tells the publisher when the link is up. Ends after a clean disconnect.
async fn drive(
    mut eventloop: EventLoop,
    link: watch::Sender<Link>,
    metrics: ReportMetrics,
    broker: String,
) {
    let mut failures = 0u32;
    let mut connection = 0u64;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                connection += 1;
                metrics.connected.set(1);
                tracing::info!("reporting to {broker}");
                link.send_replace(Link::Up(connection));
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                metrics.connected.set(0);
                link.send_replace(Link::Down);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                metrics.connected.set(0);
                metrics.connect_failures.inc();
                if link.send_replace(Link::Down) != Link::Down {
                    tracing::warn!("lost the MQTT broker {broker}: {e}");
                } else if failures == 0 {
                    tracing::warn!("cannot reach the MQTT broker {broker}: {e}");
                } else {
                    tracing::debug!("MQTT broker {broker}: {e}");
                }
                let wait = RECONNECT.delay_now(failures, None);
                failures = failures.saturating_add(1);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Whether a status is sent when it says nothing new: the periodic and on-connect ones are
/// (a broker may have lost the retained copy), the debounced ones are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    IfChanged,
    Always,
}

/// Whether the broker keeps the message for later subscribers (status and online) or only
/// hands it to those there now (events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retain {
    Yes,
    No,
}

struct Publisher {
    client: AsyncClient,
    settings: Settings,
    metrics: ReportMetrics,
    link: watch::Receiver<Link>,
    /// What the last status message handed to the session said.
    last_sent: Option<Snapshot>,
}

impl Publisher {
    fn up(&self) -> bool {
        matches!(*self.link.borrow(), Link::Up(_))
    }

    async fn run(&mut self, mut feeds: Feeds, mut stop: oneshot::Receiver<()>) {
        let mut debounce = Debounce::new(QUIET, MAX_DELAY);
        let mut full = tokio::time::interval_at(
            Instant::now() + self.settings.interval,
            self.settings.interval,
        );
        full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A closed feed (its sender gone) is left alone rather than ending the reporter.
        let (mut statuses_open, mut source_open, mut events_open) = (true, true, true);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return,
                changed = self.link.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = *self.link.borrow_and_update();
                    if let Link::Up(_) = now {
                        self.publish(&self.settings.topics.online.clone(), Retain::Yes, b"true".to_vec(), "online");
                        debounce.clear();
                        self.send_status(&feeds, Send::Always, &mut debounce);
                    }
                }
                r = feeds.statuses.changed(), if statuses_open => match r {
                    Ok(()) => debounce.touch(Instant::now()),
                    Err(_) => statuses_open = false,
                },
                r = feeds.source.changed(), if source_open => match r {
                    Ok(()) => debounce.touch(Instant::now()),
                    Err(_) => source_open = false,
                },
                ev = feeds.events.recv(), if events_open => match ev {
                    Ok(ev) => self.send_event(&ev),
                    Err(RecvError::Lagged(n)) => { self.metrics.events_dropped.inc_by(n); }
                    Err(RecvError::Closed) => events_open = false,
                },
                _ = sleep_until(debounce.due()) => {
                    debounce.clear();
                    self.send_status(&feeds, Send::IfChanged, &mut debounce);
                }
                _ = full.tick() => self.send_status(&feeds, Send::Always, &mut debounce),
            }
        }
    }

    /// Publishes the status when the link is up and it says something new (or always).
    /// A full request queue tries again shortly; a down link waits for the next connect,
    /// which publishes the state as it is then.
    fn send_status(&mut self, feeds: &Feeds, send: Send, debounce: &mut Debounce) {
        if !self.up() {
            return;
        }
        let snap = Snapshot {
            containers: feeds.statuses.borrow().clone(),
            source: feeds.source.borrow().clone(),
        };
        if send == Send::IfChanged && self.last_sent.as_ref() == Some(&snap) {
            return;
        }
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let doc = snap.document(&self.settings.id, time);
        let payload = serde_json::to_vec(&doc).expect("status serialises");
        if payload.len() > MAX_MESSAGE {
            tracing::warn!(
                "status of {} bytes is over the {} bytes an MQTT message may have here: not sent",
                payload.len(),
                MAX_MESSAGE
            );
            return;
        }
        let topic = self.settings.topics.status.clone();
        if self.publish(&topic, Retain::Yes, payload, "status") {
            self.last_sent = Some(snap);
        } else {
            // Not a change, so it does not reset the quiet time: just come back.
            debounce.touch(Instant::now() + (RETRY_FULL - QUIET));
        }
    }

    fn send_event(&mut self, ev: &EventRecord) {
        if !self.up() {
            self.metrics.events_dropped.inc();
            return;
        }
        let payload = serde_json::to_vec(ev).expect("event serialises");
        let topic = self.settings.topics.events.clone();
        if !self.publish(&topic, Retain::No, payload, "event") {
            self.metrics.events_dropped.inc();
        }
    }

    /// Hands a QoS 1 message to the session without waiting; false when its queue is full.
    fn publish(&self, topic: &str, retain: Retain, payload: Vec<u8>, kind: &str) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain == Retain::Yes, payload)
        {
            Ok(()) => {
                self.metrics
                    .published
                    .get_or_create(&KindLabel { kind: kind.into() })
                    .inc();
                true
            }
            Err(e) => {
                tracing::debug!("MQTT {kind} not queued: {e}");
                false
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
