//! Which burn backend a peer computes with, chosen at run time.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A CPU backend of burn. Both run natively and in WebAssembly (single thread, SIMD).
///
/// [`Backend::Flex`] is the default: in headless Chromium it trains the MLP as fast as
/// ndarray (see `bench/results/train_step.json`), it is burn's maintained CPU backend, and
/// burn 0.23 drops ndarray.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `burn-flex`, burn's current CPU backend.
    #[default]
    Flex,
    /// `burn-ndarray`, deprecated upstream but still the reference CPU backend.
    Ndarray,
}

impl Backend {
    /// Every backend, in the order benchmarks report them.
    pub const ALL: [Backend; 2] = [Backend::Flex, Backend::Ndarray];

    /// The plain (inference) device of this backend.
    pub fn device(self) -> Device {
        match self {
            Backend::Flex => Device::flex(),
            #[allow(deprecated)]
            Backend::Ndarray => Device::ndarray(),
        }
    }

    /// The device that records gradients, for training.
    pub fn autodiff_device(self) -> Device {
        self.device().autodiff()
    }

    /// The name used on command lines and in benchmark files.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that is not `flex` or `ndarray`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?}: use \"flex\" or \"ndarray\"")]
pub struct UnknownBackend(pub String);

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "flex" => Ok(Backend::Flex),
            "ndarray" => Ok(Backend::Ndarray),
            _ => Err(UnknownBackend(s.to_owned())),
        }
    }
}
