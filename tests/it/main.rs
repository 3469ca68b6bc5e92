//! Every integration test of haconiwa, in one binary (one link of the whole crate instead
//! of one per file): real namespaces, cgroups, supervisors and containers, as root.

mod common;

mod architecture;
mod bootstrap;
mod cgroup_v2_guest;
mod cluster;
mod daemon;
mod demo;
mod dsl_keys;
mod exec;
mod faults;
mod haco_loader;
mod health;
mod image_cluster;
mod image_pull;
mod images;
mod isolation;
mod launch_errors;
mod logs;
mod mirror;
mod network;
mod node_config;
mod node_policy;
mod oci;
mod privileges;
mod rollout;
mod rule_events;
mod rules;
mod scale;
mod security;
mod storage;
mod tls;
mod vagrant;
mod web;
