//! An EJBCA REST simulator: test equipment that follows EJBCA's wire protocol and checks what it
//! receives against EJBCA's OpenAPI spec ([`openapi`]).
//!
//! * HTTPS only (rustls), under `/ejbca/ejbca-rest-api`, with optional client-certificate
//!   verification: a client certificate chaining to the simulator's root authenticates; so does a
//!   bearer token from the simulator's OAuth 2.0 token endpoint (`/oauth/token`, client
//!   credentials, expiring tokens). Neither → `403` with EJBCA's message.
//! * Every request is routed through the spec (unknown path → 404, wrong method → 405, bad
//!   path parameter, body type, enum or unknown property → 400) and every JSON answer is checked
//!   against the documented response; mismatches are recorded in [`EjbcaSim::violations`].
//! * Real certificates: a root and issuing CAs (rcgen); chains are real and verify with openssl.
//! * CAs, certificate profiles and end-entity profiles are configured; unknown ones are answered
//!   as EJBCA's `convertToEndEntityInformation` does (400 with its message).
//! * Fault modes: latency, any status, garbage bodies, connection resets (before or after the
//!   certificate was issued), approval required (202, then approve / reject), and a CA outage
//!   ([`EjbcaSim::set_ca_offline`]: 503 until switched back).
//! * Counters: successful enrollments, enroll calls, token calls — so tests can prove that a
//!   request was never enrolled twice.

//!
//! Layout: [`options`](SimOptions) (what the simulator knows, its fault and approval modes),
//! `control` (the [`EjbcaSim`] handle tests drive), `front` (HTTPS, authentication, routing,
//! fault injection, the OAuth token endpoint), `endpoints` (EJBCA's REST operations) and
//! `state` (what the simulated EJBCA holds). Dependencies point one way:
//! control → front → endpoints → state → options.

mod control;
mod endpoints;
mod front;
pub mod openapi;
mod options;
mod state;

pub use control::EjbcaSim;
pub use options::{ApprovalMode, Fault, Logged, SimOptions, TOKEN_PATH};
