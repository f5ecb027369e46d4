//! Credentials without IO: signed access tokens, roles, password hashing and opaque tokens.
//! Below the application state (which holds the token keys) and `auth`, which checks them
//! against the database per request.

pub mod jwt;
pub mod password;
pub mod role;
pub mod sealed;
pub mod tokens;
pub mod totp;

pub use role::Role;
