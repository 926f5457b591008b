//! Evaluations of frozen features.
pub mod attention;
pub mod features;
pub mod finetune;
pub mod knn;
pub mod linear;
pub mod tsne;
