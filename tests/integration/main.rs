//! Black-box tests against real redis-server, Chroma and Prometheus processes.

mod alerting;
mod backends;
mod chroma_security;
mod cli;
mod dashboards;
mod embeddings;
mod faults;
mod fleet;
mod fleet_prometheus;
mod flood;
mod helpers;
mod http_surface;
mod ingress;
mod landing;
mod layout;
mod memory;
mod mixin;
mod pki;
mod prometheus;
mod redis_security;
mod reload;
mod secrets;
mod topologies;
mod vectors;
mod web;
mod workload;
