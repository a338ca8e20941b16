//! The accepted shapes of `update`'s params.

use jsonrpsee::types::Params;
use serde_json::Value;

use super::error::UpdateError;

/// Extracts the actions array. Accepted:
/// - `[actions]`: positional, what chaos-daemon's Go client sends (`Call("update", actions)`);
/// - `actions`: the array of action objects itself (`[]` clears the rules);
/// - `{"actions": actions}`: by name.
pub(super) fn actions_from_params(params: &Params<'_>) -> Result<Value, UpdateError> {
    let Some(raw) = params.as_str() else {
        return Err(UpdateError::Params("no params".to_owned()));
    };
    let value: Value =
        serde_json::from_str(raw).map_err(|e| UpdateError::Params(format!("invalid JSON: {e}")))?;
    match value {
        Value::Array(mut items) if items.len() == 1 && items[0].is_array() => Ok(items.remove(0)),
        Value::Array(_) => Ok(value),
        Value::Object(mut fields) => {
            let actions = fields
                .remove("actions")
                .ok_or_else(|| UpdateError::Params("an object without \"actions\"".to_owned()))?;
            if let Some(other) = fields.keys().next() {
                return Err(UpdateError::Params(format!(
                    "an unknown parameter {other:?}"
                )));
            }
            Ok(actions)
        }
        other => Err(UpdateError::Params(format!("{other}"))),
    }
}
