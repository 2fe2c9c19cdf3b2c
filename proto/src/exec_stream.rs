//! The body of a streamed exec answer (`POST /v1/workspaces/{name}/exec/stream`,
//! media type [`MEDIA_TYPE`]): a sequence of frames, each a kind byte, the
//! payload's length as a 4-byte big-endian integer, and the payload. Output
//! arrives as the command writes it; the last frame is its exit status or an
//! error. A body that ends without either was cut (the connection broke).

/// The media type of a streamed exec answer.
pub const MEDIA_TYPE: &str = "application/vnd.berth.exec-stream";

/// Largest payload a frame carries; longer output is split.
pub const MAX_PAYLOAD: usize = 64 << 10;

/// What a frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes the command wrote to standard output.
    Stdout(Vec<u8>),
    /// Bytes the command wrote to standard error.
    Stderr(Vec<u8>),
    /// The command ended with this status (the last frame).
    Exit(i32),
    /// The exec failed after it started (`exec_timeout`, `node_error`); the
    /// last frame. Payload: a JSON `{code, message}`.
    Error { code: String, message: String },
}

const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const EXIT: u8 = 3;
const ERROR: u8 = 4;

impl Frame {
    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload) = match self {
            Frame::Stdout(b) => (STDOUT, b.clone()),
            Frame::Stderr(b) => (STDERR, b.clone()),
            Frame::Exit(c) => (EXIT, c.to_be_bytes().to_vec()),
            Frame::Error { code, message } => (
                ERROR,
                serde_json::to_vec(&ErrorPayload {
                    code: code.clone(),
                    message: message.clone(),
                })
                .unwrap_or_default(),
            ),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

/// A malformed stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("frame of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("bad {0} frame")]
    Payload(&'static str),
}

/// Takes whole frames off the front of `buf`, leaving a partial one.
pub fn decode(buf: &mut Vec<u8>) -> Result<Vec<Frame>, DecodeError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 5 {
        let kind = buf[at];
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if len > MAX_PAYLOAD.max(4096) {
            return Err(DecodeError::TooLong(len));
        }
        if buf.len() - at - 5 < len {
            break;
        }
        let payload = buf[at + 5..at + 5 + len].to_vec();
        frames.push(match kind {
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            EXIT => Frame::Exit(i32::from_be_bytes(
                payload
                    .try_into()
                    .map_err(|_| DecodeError::Payload("exit"))?,
            )),
            ERROR => {
                let e: ErrorPayload =
                    serde_json::from_slice(&payload).map_err(|_| DecodeError::Payload("error"))?;
                Frame::Error {
                    code: e.code,
                    message: e.message,
                }
            }
            k => return Err(DecodeError::Kind(k)),
        });
        at += 5 + len;
    }
    buf.drain(..at);
    Ok(frames)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ErrorPayload {
    code: String,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_any_split() {
        let frames = vec![
            Frame::Stdout(b"hello\n".to_vec()),
            Frame::Stderr(vec![0; 3]),
            Frame::Stdout(vec![]),
            Frame::Error {
                code: "exec_timeout".into(),
                message: "the \"command\" ran\nlong \\ \u{1}".into(),
            },
            Frame::Exit(-9),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for split in 0..wire.len() {
            let mut buf = wire[..split].to_vec();
            let mut got = decode(&mut buf).unwrap();
            buf.extend_from_slice(&wire[split..]);
            got.extend(decode(&mut buf).unwrap());
            assert_eq!(got, frames, "split at {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bad_streams_are_errors_not_panics() {
        assert_eq!(decode(&mut vec![9, 0, 0, 0, 0]), Err(DecodeError::Kind(9)));
        assert_eq!(
            decode(&mut vec![1, 0xff, 0, 0, 0]),
            Err(DecodeError::TooLong(0xff00_0000))
        );
        assert_eq!(
            decode(&mut vec![3, 0, 0, 0, 1, 7]),
            Err(DecodeError::Payload("exit"))
        );
        assert_eq!(
            decode(&mut vec![4, 0, 0, 0, 2, b'{', b'}']),
            Err(DecodeError::Payload("error"))
        );
    }
}
