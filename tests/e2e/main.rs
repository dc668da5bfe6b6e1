//! Cross-crate end-to-end tests: what no single adapter's tests can show on their own.

mod coexist;
mod crds;
mod fuzz_corpus;
mod kubectl;
