//! Integration tests: every test talks HTTP to the real application, once per backend.

mod helpers;

mod alert_episodes;
mod alerts;
mod audit;
mod auth;
mod bank;
mod candidates_index;
mod cli;
mod collections;
mod console;
mod console_alerts;
mod console_board;
mod console_requests;
mod console_support;
#[cfg(unix)]
mod crash;
mod demo;
mod donors;
mod errors;
mod exposure;
mod fhir;
mod fhir_observation;
mod fhir_patient;
mod fhir_product;
mod fhir_round_trip;
mod fhir_service_request;
mod fhir_support;
mod health;
mod idempotency;
mod isbt128;
mod judgement;
mod keys;
mod limits;
mod mfa;
mod migration;
mod openapi;
mod policy;
mod references;
mod requests;
mod safety;
mod security;
mod units;
mod users;
mod webhook_security;
