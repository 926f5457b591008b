//! svib: self-supervised visual representation learning with SVIB (Self-supervised Variational
//! Information Bottleneck), over libtorch through `tch`.
//!
//! The pipeline, module by module: [`data`] reads data sets, [`augment`] makes multi-crop views,
//! [`models`] holds the backbones, [`eval`] the evaluations, [`cli`] the command line.
pub mod augment;
pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod dist;
pub mod eval;
pub mod experiments;
pub mod interop;
pub mod malloc;
pub mod methods;
pub mod models;
pub mod train;
pub mod util;
