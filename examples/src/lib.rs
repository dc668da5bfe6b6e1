//! Example issuer (being built).
