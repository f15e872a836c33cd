//! What the controller computes from data: reference datasets (CSV, `.npy`), baseline
//! profiles built from them, and the drift statistics (as scipy computes them).
//!
//! # Layout
//! - [`dataset`]: reference data from CSV or `.npy`.
//! - [`profile`]: baseline profiles from a dataset (quantile bins, moments, reservoir).
//! - [`drift`]: PSI, Jensen–Shannon, normalised Wasserstein, KS, chi-squared.

pub mod dataset;
pub mod drift;
pub mod profile;
