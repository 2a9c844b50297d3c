//! Marketplace simulators: real HTTP servers speaking eBay's, Etsy's and Vinted's paths,
//! payloads, status codes, rate-limit headers and error bodies, stateful in memory, so the
//! platform's clients are tested against the wire format and pointing them at the real
//! marketplaces is a configuration change. Each simulator also serves `/_admin/*` for tests.
//! See README.md for every endpoint and knob.

// The large `json!` literals for Etsy listings and receipts need a deeper macro recursion.
#![recursion_limit = "256"]
// Handlers short-circuit with the marketplace's own error `Response` as the `Err` value; it is
// built once per request, so its size does not matter and boxing would only add noise.
#![allow(clippy::result_large_err)]

pub mod clock;
pub mod common;
pub mod ebay;
pub mod etsy;
pub mod faults;
pub mod log;
pub mod net;
pub mod push;
pub mod ratelimit;
pub mod vinted;

use std::io;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where and how to run the three simulators. Ports of 0 pick free ports.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub host: String,
    pub ebay_port: u16,
    pub etsy_port: u16,
    pub vinted_port: u16,
    pub ebay: ebay::Settings,
    pub etsy: etsy::Settings,
    pub vinted: vinted::Settings,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            ebay_port: 0,
            etsy_port: 0,
            vinted_port: 0,
            ebay: ebay::Settings::default(),
            etsy: etsy::Settings::default(),
            vinted: vinted::Settings::default(),
        }
    }
}

/// The running simulators. Dropping it stops them (in the background); `shutdown` stops them
/// and waits.
pub struct Running {
    pub ebay_url: String,
    pub etsy_url: String,
    pub vinted_url: String,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<io::Result<()>>>,
}

impl Running {
    pub async fn shutdown(mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}

/// Binds and starts the three simulators; returns once all three accept connections.
pub async fn start(cfg: SimConfig) -> io::Result<Running> {
    let c = common::Common::new();
    let ebay = net::serve(
        &cfg.host,
        cfg.ebay_port,
        ebay::app(cfg.ebay, c.clone()),
        c.kills.clone(),
    )
    .await?;
    let c = common::Common::new();
    let etsy = net::serve(
        &cfg.host,
        cfg.etsy_port,
        etsy::app(cfg.etsy, c.clone()),
        c.kills.clone(),
    )
    .await?;
    let c = common::Common::new();
    let vinted = net::serve(
        &cfg.host,
        cfg.vinted_port,
        vinted::app(cfg.vinted, c.clone()),
        c.kills.clone(),
    )
    .await?;
    let mut running = Running {
        ebay_url: ebay.url,
        etsy_url: etsy.url,
        vinted_url: vinted.url,
        stops: Vec::new(),
        tasks: Vec::new(),
    };
    for (stop, task) in [
        (ebay.stop, ebay.task),
        (etsy.stop, etsy.task),
        (vinted.stop, vinted.task),
    ] {
        running.stops.push(stop);
        running.tasks.push(task);
    }
    Ok(running)
}
