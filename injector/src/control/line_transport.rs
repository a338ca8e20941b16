//! JSON-RPC 2.0, one request per line, on any byte stream: the socket the agent hands
//! the injector, or stdin/stdout. Requests are executed by jsonrpsee's `RpcModule`; this
//! module only frames lines and answers what is not a single request.

use jsonrpsee::RpcModule;
use jsonrpsee::types::error::{INVALID_REQUEST_CODE, OVERSIZED_REQUEST_CODE, PARSE_ERROR_CODE};
use jsonrpsee::types::{ErrorObjectOwned, Id, Response, ResponsePayload};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::context::ControlContext;
use super::error::ControlError;
use super::recovery::RecoverySignal;

/// The longest request line accepted; longer ones are answered with an error and skipped.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Why [`ControlPlane::serve_lines`](super::ControlPlane::serve_lines) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinesEnded {
    /// The peer closed its end.
    EndOfInput,
    /// Recovery was requested (by `recover` on this or another transport, or a signal).
    Recovered,
}

enum Line {
    Request(Vec<u8>),
    TooLong,
    EndOfInput,
}

pub(super) async fn serve<R, W>(
    module: &RpcModule<ControlContext>,
    recovery: &RecoverySignal,
    reader: R,
    mut writer: W,
) -> Result<LinesEnded, ControlError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(reader);
    loop {
        if recovery.is_requested() {
            return Ok(LinesEnded::Recovered);
        }
        let line = tokio::select! {
            line = read_line(&mut reader) => line.map_err(ControlError::Read)?,
            () = recovery.requested() => return Ok(LinesEnded::Recovered),
        };
        let answer = match line {
            Line::EndOfInput => return Ok(LinesEnded::EndOfInput),
            Line::TooLong => Some(error_response(
                OVERSIZED_REQUEST_CODE,
                format!("request line longer than {MAX_REQUEST_BYTES} bytes"),
            )),
            Line::Request(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) if text.trim().is_empty() => None,
                Ok(text) => answer(module, text.trim()).await,
                Err(_) => Some(error_response(
                    PARSE_ERROR_CODE,
                    "request is not UTF-8".into(),
                )),
            },
        };
        if let Some(answer) = answer {
            writer
                .write_all(answer.as_bytes())
                .await
                .map_err(ControlError::Write)?;
            writer.write_all(b"\n").await.map_err(ControlError::Write)?;
            writer.flush().await.map_err(ControlError::Write)?;
        }
    }
}

/// Reads one line (without its newline), refusing to buffer more than the limit.
async fn read_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let limit = MAX_REQUEST_BYTES as u64 + 1;
    let read = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Ok(Line::EndOfInput);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Line::Request(line));
    }
    if line.len() as u64 >= limit {
        // Skip the rest of the oversized line.
        let mut discard = Vec::new();
        loop {
            discard.clear();
            let skipped = (&mut *reader)
                .take(64 << 10)
                .read_until(b'\n', &mut discard)
                .await?;
            if skipped == 0 || discard.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Line::TooLong);
    }
    // The last line of the input, without a newline.
    Ok(Line::Request(line))
}

/// The response line for one request line, or `None` for a notification.
async fn answer(module: &RpcModule<ControlContext>, text: &str) -> Option<String> {
    if let Ok((response, _subscriptions)) = module.raw_json_request(text, 1).await {
        return Some(response.get().to_owned());
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            return Some(error_response(
                PARSE_ERROR_CODE,
                format!("Parse error: {e}"),
            ));
        }
    };
    match value {
        Value::Array(_) => Some(error_response(
            INVALID_REQUEST_CODE,
            "batch requests are not supported; send one request per line".into(),
        )),
        Value::Object(mut request)
            if request.contains_key("method") && !request.contains_key("id") =>
        {
            // A notification: run it, answer nothing (JSON-RPC 2.0 §4.1).
            request.insert("id".into(), Value::Null);
            let call = Value::Object(request).to_string();
            if module.raw_json_request(&call, 1).await.is_err() {
                tracing::warn!(request = text, "ignored a malformed JSON-RPC notification");
            }
            None
        }
        _ => Some(error_response(
            INVALID_REQUEST_CODE,
            "not a JSON-RPC 2.0 request (needs \"jsonrpc\": \"2.0\", \"method\" and \"id\")".into(),
        )),
    }
}

fn error_response(code: i32, message: String) -> String {
    let error = ErrorObjectOwned::owned(code, message, None::<()>);
    let response = Response::new(ResponsePayload::<()>::error(error), Id::Null);
    // Serializing a response built from plain strings cannot fail; keep a literal fallback.
    serde_json::to_string(&response).unwrap_or_else(|_| {
        r#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error"},"id":null}"#
            .to_owned()
    })
}
