//! certbridge ejbca issuer (being built).
