//! NVML behind a small trait: the real library (loaded at run time through `nvml-wrapper`,
//! so the binary starts on hosts without libnvidia-ml.so.1), or anything else that answers
//! the same questions (a fake NVML in tests).

use std::ffi::OsStr;
use std::path::Path;

pub use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

/// Call nvmlDeviceGetGpuInstanceId / nvmlDeviceGetComputeInstanceId (which nvml-wrapper
/// 0.13 does not wrap) through the library's symbol table; `?`s out an NvmlError.
macro_rules! instance_id {
    ($sym:expr, $dev:expr) => {{
        let f = $sym
            .as_ref()
            .map_err(|e| NvmlError::FailedToLoadSymbol(e.to_string()))?;
        let mut id: std::os::raw::c_uint = 0;
        // SAFETY: the handle comes from this live NVML instance, `id` is a valid out
        // pointer, and the symbol has the signature NVML documents.
        let ret = unsafe { f($dev.handle(), &mut id) };
        nvml_wrapper::error::nvml_try(ret)?;
        id
    }};
}

/// One GPU as NVML describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmlGpu {
    pub uuid: String,
    pub minor: u32,
    /// NVML's form, `00000000:3B:00.0`.
    pub pci_bus_id: String,
    pub name: Option<String>,
    pub migs: Vec<NvmlMig>,
    /// Non-fatal problems (a MIG device that could not be read, ...).
    pub warnings: Vec<String>,
}

/// One MIG device as NVML describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmlMig {
    /// NVML's MIG handle index (slot) on the parent; names are `<gpu index>:<slot>`.
    pub index: u32,
    pub uuid: String,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
}

/// The NVML questions discovery asks.
pub trait NvmlApi {
    /// Driver version, e.g. `550.54.14`.
    fn driver_version(&self) -> Result<String, NvmlError>;
    /// CUDA driver API version as NVML encodes it (`12040` for 12.4).
    fn cuda_driver_version(&self) -> Result<i32, NvmlError>;
    fn device_count(&self) -> Result<u32, NvmlError>;
    /// GPU `index`; `Err(NvmlError::GpuLost)` for a GPU that fell off the bus.
    fn device(&self, index: u32) -> Result<NvmlGpu, NvmlError>;
}

/// `12040` -> `12.4`, as nvidia-smi prints it.
pub fn format_cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// The real NVML.
pub struct RealNvml {
    nvml: Nvml,
}

impl RealNvml {
    /// Load NVML from `lib` (a path, e.g. found in a driver root's ld.so.cache) or, by
    /// default, `libnvidia-ml.so.1` through the system's loader path, and initialize it.
    /// Fails (never panics) when the library is absent, lacks NVML's symbols, or the driver
    /// is not loaded.
    pub fn load(lib: Option<&Path>) -> Result<RealNvml, NvmlError> {
        let nvml = match lib {
            Some(p) => Nvml::builder().lib_path(OsStr::new(p)).init()?,
            None => Nvml::init()?,
        };
        Ok(RealNvml { nvml })
    }
}

impl NvmlApi for RealNvml {
    fn driver_version(&self) -> Result<String, NvmlError> {
        self.nvml.sys_driver_version()
    }

    fn cuda_driver_version(&self) -> Result<i32, NvmlError> {
        self.nvml.sys_cuda_driver_version()
    }

    fn device_count(&self) -> Result<u32, NvmlError> {
        self.nvml.device_count()
    }

    fn device(&self, index: u32) -> Result<NvmlGpu, NvmlError> {
        let d = self.nvml.device_by_index(index)?;
        let uuid = d.uuid()?;
        let minor = d.minor_number()?;
        let pci_bus_id = d.pci_info()?.bus_id;
        let name = d.name().ok();
        let mut warnings = Vec::new();
        let mut migs = Vec::new();
        let mig_enabled = match d.mig_mode() {
            // NVML_DEVICE_MIG_ENABLE
            Ok(m) => m.current == 1,
            Err(NvmlError::NotSupported) => false,
            Err(e) => {
                warnings.push(format!("GPU {index}: cannot read the MIG mode: {e}"));
                false
            }
        };
        if mig_enabled {
            let max = d.mig_device_count().unwrap_or(0);
            for mi in 0..max {
                let mig = match d.mig_device_by_index(mi) {
                    Ok(m) => m,
                    // Empty slots answer NotFound.
                    Err(NvmlError::NotFound) | Err(NvmlError::InvalidArg) => continue,
                    Err(e) => {
                        warnings.push(format!("GPU {index}: MIG device {mi}: {e}"));
                        continue;
                    }
                };
                let ids = mig.uuid().and_then(|uuid| {
                    let lib = self.nvml.lib();
                    let gi = instance_id!(lib.nvmlDeviceGetGpuInstanceId, mig);
                    let ci = instance_id!(lib.nvmlDeviceGetComputeInstanceId, mig);
                    Ok((uuid, gi, ci))
                });
                match ids {
                    Ok((uuid, gpu_instance_id, compute_instance_id)) => migs.push(NvmlMig {
                        // The NVML slot, as nvidia-ctk names MIG devices (`GPU:slot`).
                        index: mi,
                        uuid,
                        gpu_instance_id,
                        compute_instance_id,
                    }),
                    Err(e) => warnings.push(format!("GPU {index}: MIG device {mi}: {e}")),
                }
            }
        }
        Ok(NvmlGpu {
            uuid,
            minor,
            pci_bus_id,
            name,
            migs,
            warnings,
        })
    }
}
