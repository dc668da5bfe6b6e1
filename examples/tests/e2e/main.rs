//! End-to-end tests of the LocalCA example issuer. They double as the framework's end-to-end tests:
//! `offline` drives the signer the way `check -f` / `sign -f` do.

mod offline;
mod support;
