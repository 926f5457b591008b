//! The tiny networks of the method tests: a ResNet-18 of width 4 on grey crops, head 16 -> 8.
use super::{HeadConfig, Shared};
use crate::models::ArchConfig;

pub struct Tiny {
    pub model: ArchConfig,
    pub head: HeadConfig,
}

impl Tiny {
    pub fn new() -> Tiny {
        let model = ArchConfig::parse("resnet18:small_stem=true,width=4").unwrap();
        Tiny { model, head: HeadConfig { hidden: 16, out: 8, ..Default::default() } }
    }
    pub fn shared(&self) -> Shared<'_> {
        Shared { model: &self.model, head: &self.head, channels: 1 }
    }
}
