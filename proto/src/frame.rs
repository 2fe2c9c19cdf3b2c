//! Length-delimited framing of prost messages over any async byte stream.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted, so a hostile peer cannot make us allocate at will.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o on the stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Writes `msg` as one frame and flushes.
pub async fn write_frame<W, M>(w: &mut W, msg: &M) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    M: Message,
{
    let len = msg.encoded_len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<R, M>(r: &mut R) -> Result<Option<M>, FrameError>
where
    R: AsyncRead + Unpin,
    M: Message + Default,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(M::decode(buf.as_slice())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{request::Command, NameRequest, Request};

    #[tokio::test]
    async fn round_trips_and_ends_cleanly() {
        let msg = Request {
            command: Some(Command::Status(NameRequest {
                name: "ws-1".into(),
                generation: 7,
            })),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).await.unwrap();
        write_frame(&mut buf, &msg).await.unwrap();
        let mut r = buf.as_slice();
        let a: Request = read_frame(&mut r).await.unwrap().unwrap();
        let b: Request = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(a, msg);
        assert_eq!(b, msg);
        assert!(read_frame::<_, Request>(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_oversized_and_garbage_frames() {
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame::<_, Request>(&mut r).await,
            Err(FrameError::TooLarge(_))
        ));
        let mut r: &[u8] = &[0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame::<_, Request>(&mut r).await,
            Err(FrameError::Decode(_))
        ));
        let mut r: &[u8] = &[0, 0, 0, 9, 1];
        assert!(matches!(
            read_frame::<_, Request>(&mut r).await,
            Err(FrameError::Io(_))
        ));
    }
}
