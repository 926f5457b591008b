//! Evaluations of frozen features.
pub mod features;
pub mod knn;
