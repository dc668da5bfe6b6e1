//! certbridge vault issuer (being built).
