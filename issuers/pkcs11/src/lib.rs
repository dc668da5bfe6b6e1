//! certbridge pkcs11 issuer (being built).
