//! Integration tests: each starts the real `sovra` binary on a free port with
//! a temporary data directory, against SQLite and a real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod answers;
mod audit;
mod auth;
mod config;
mod crash;
mod deploy;
mod documents;
mod evaluation;
mod hardening;
mod http;
mod pages;
mod quotas;
mod replicas;
mod retrieval;
