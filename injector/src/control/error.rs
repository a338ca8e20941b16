//! Control-plane errors, and how `update` refusals look on the wire.

use std::io;

use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::types::error::{CALL_EXECUTION_FAILED_CODE, INVALID_PARAMS_CODE};
use serde::Serialize;

use crate::fault_rules::RuleError;

/// Why the control plane could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("registering JSON-RPC method {method}: {source}")]
    Register {
        method: &'static str,
        #[source]
        source: jsonrpsee::core::RegisterMethodError,
    },
    #[error("binding the HTTP control server to {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("reading a control request: {0}")]
    Read(#[source] io::Error),
    #[error("writing a control response: {0}")]
    Write(#[source] io::Error),
}

/// Why an `update` was refused; the rules in force are unchanged.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(
        "update needs the IOChaos actions: params [actions] (positional), the actions array itself, or {{\"actions\": [...]}}; got {0}"
    )]
    Params(String),
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error("recovery is under way; no more rules are taken")]
    Recovering,
}

#[derive(Serialize)]
struct RuleErrorData<'a> {
    index: usize,
    field: &'a str,
}

impl From<UpdateError> for ErrorObjectOwned {
    fn from(error: UpdateError) -> ErrorObjectOwned {
        let message = error.to_string();
        match &error {
            UpdateError::Rules(rule_error) => {
                let data = rule_error.location().map(|location| RuleErrorData {
                    index: location.index,
                    field: &location.field,
                });
                ErrorObjectOwned::owned(INVALID_PARAMS_CODE, message, data)
            }
            UpdateError::Params(_) => {
                ErrorObjectOwned::owned(INVALID_PARAMS_CODE, message, None::<()>)
            }
            UpdateError::Recovering => {
                ErrorObjectOwned::owned(CALL_EXECUTION_FAILED_CODE, message, None::<()>)
            }
        }
    }
}
