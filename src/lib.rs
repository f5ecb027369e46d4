//! granulo: donor granulocyte management for blood banks.
//!
//! `domain/` holds the clinical rules as pure functions, `store/` the persistence, `routes/` the
//! HTTP handlers, `auth/` authentication and authorisation; `startup` wires them together.

pub mod accounts;
pub mod auth;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod domain;
pub mod error;
pub mod extract;
pub mod input;
pub mod jobs;
pub mod labels;
pub mod metrics;
pub mod routes;
pub mod services;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
