//! controller tests
