//! Fuzz target bodies (see `targets.rs`, shared with the corpus replay test).
include!("targets.rs");
