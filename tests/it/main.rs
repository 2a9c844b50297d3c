//! One test binary (links once). Each test gets its own database and its own processes.

mod api;
mod auth;
mod browser;
mod connections;
mod crash;
mod dashboard;
mod ebay_client;
mod etsy_client;
mod events;
mod extension;
mod lifecycle;
mod limits;
mod metrics;
mod orders;
mod outage;
mod plugin;
mod products;
mod publish;
mod refresh;
mod regressions;
mod ssrf;
mod stock;
mod stock_back;
mod tenancy;
mod walls;
mod webhooks;
