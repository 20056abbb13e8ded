//! [`SharedStore`] over proxy-wasm shared data: one store per `vm_id`, shared by every worker
//! of the Envoy process, with Envoy's compare-and-swap.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::policy::shared::{ReadError, SharedStore, WriteError};

/// The host's shared data.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, ReadError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(bytes), cas)) => Ok(Some((bytes, cas.unwrap_or(0)))),
            Ok((None, _)) => Ok(None),
            Err(_) => Err(ReadError),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), WriteError> {
        let cas = (cas != 0).then_some(cas);
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(WriteError::CasMismatch),
            Err(_) => Err(WriteError::Host),
        }
    }
}
