//! The dataset spec string: `fashion-mnist`, `mnist:DIR`, `kmnist:DIR`, `idx:DIR`, `cifar10:DIR`,
//! `cifar100:DIR`, `stl10:DIR`, `folder:DIR`, `wds:DIR`.
use anyhow::{bail, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Idx,
    Cifar10,
    Cifar100,
    Stl10,
    Folder,
    Wds,
}

impl Format {
    /// The format a spec's name (before the colon) selects.
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name {
            "fashion-mnist" | "mnist" | "kmnist" | "idx" => Format::Idx,
            "cifar10" => Format::Cifar10,
            "cifar100" => Format::Cifar100,
            "stl10" => Format::Stl10,
            "folder" => Format::Folder,
            "wds" => Format::Wds,
            _ => return None,
        })
    }

    /// The channels every image of the format has (IDX grey, CIFAR and STL-10 colour); None for
    /// image folders and shards, whose files say.
    pub fn fixed_channels(self) -> Option<u8> {
        match self {
            Format::Idx => Some(1),
            Format::Cifar10 | Format::Cifar100 | Format::Stl10 => Some(3),
            Format::Folder | Format::Wds => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    /// The name before the colon (`fashion-mnist`, `mnist`, `idx`, …): selects normalisation presets.
    pub name: String,
    pub format: Format,
    pub dir: PathBuf,
}

pub const SPEC_HELP: &str = "fashion-mnist | mnist:DIR | kmnist:DIR | idx:DIR | cifar10:DIR | cifar100:DIR | stl10:DIR | folder:DIR | wds:DIR";

/// A spec string with its folder made absolute (`folder:photos` -> `folder:/home/me/photos`, from
/// the working directory, links kept), so that a run's config.toml names its data wherever the
/// run is later evaluated or resumed from. Specs without a folder, or with an absolute one, are
/// returned as they are.
pub fn absolute_spec(spec: &str) -> String {
    match spec.split_once(':') {
        Some((name, dir)) if !dir.is_empty() && Path::new(dir).is_relative() => match std::path::absolute(dir) {
            Ok(abs) => format!("{name}:{}", abs.display()),
            Err(_) => spec.to_string(),
        },
        _ => spec.to_string(),
    }
}

impl FromStr for DataSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (name, dir) = match s.split_once(':') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        let Some(format) = Format::from_name(name) else { bail!("unknown dataset `{s}`: expected {SPEC_HELP}") };
        let dir = match (name, dir) {
            (_, Some("")) => bail!("dataset `{s}`: the directory after `{name}:` is empty"),
            (_, Some(d)) => PathBuf::from(d),
            ("fashion-mnist", None) => PathBuf::from(FASHION_MNIST_DIR),
            (_, None) => bail!("dataset `{s}`: expected `{name}:DIR` (a directory is needed)"),
        };
        if !dir.is_dir() {
            if name == "fashion-mnist" && dir == Path::new(FASHION_MNIST_DIR) {
                bail!("dataset `{s}`: {} does not exist; install it with `apt-get install dataset-fashion-mnist` (scripts/setup.sh does)", dir.display());
            }
            if dir.exists() {
                bail!("dataset `{s}`: {} is a file, not a directory (give the folder that holds the data set)", dir.display());
            }
            bail!("dataset `{s}`: directory {} does not exist", dir.display());
        }
        Ok(DataSpec { name: name.to_string(), format, dir })
    }
}

impl DataSpec {
    /// Fashion-MNIST where Debian installs it: what the commands read when no data set is named.
    pub fn fashion_mnist() -> Result<DataSpec> {
        "fashion-mnist".parse()
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name == "fashion-mnist" && self.dir == Path::new(FASHION_MNIST_DIR) {
            write!(f, "fashion-mnist")
        } else {
            write!(f, "{}:{}", self.name, self.dir.display())
        }
    }
}
