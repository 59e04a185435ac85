//! Black-box tests against real redis-server, Chroma and Prometheus processes.

mod backends;
mod cli;
mod dashboards;
mod embeddings;
mod helpers;
mod http_surface;
mod memory;
mod pki;
mod prometheus;
mod redis_security;
mod reload;
mod secrets;
mod web;
mod workload;
