//! The framing of an exec stream, spoken over the upgraded connection from
//! the CLI through the server (which only copies bytes) to the agent.
//!
//! A frame is one channel byte, the payload's length as a big-endian `u32`,
//! then the payload:
//!
//! | channel | direction      | payload                                     |
//! |---------|----------------|---------------------------------------------|
//! | 0       | to the agent   | stdin bytes                                 |
//! | 1       | to the client  | stdout bytes (all output with a TTY)        |
//! | 2       | to the client  | stderr bytes                                |
//! | 3       | to the agent   | window size: columns, rows (`u16` each, BE) |
//! | 4       | to the client  | exit code (`i32`, BE); the last frame       |
//! | 5       | to the agent   | none: stdin has ended                       |

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload a frame may carry; bounds what a peer can make the
/// other side buffer.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One message of an exec stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Input for the process.
    Stdin(Bytes),
    /// The process's standard output (with a TTY, all of its output).
    Stdout(Bytes),
    /// The process's standard error.
    Stderr(Bytes),
    /// The client's terminal changed size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// The process ended with this code (128 + n for signal n).
    Exit(i32),
    /// The client's input has ended.
    StdinClosed,
}

impl Frame {
    /// The frame as sent on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (channel, payload): (u8, &[u8]) = match self {
            Frame::Stdin(data) => (0, data),
            Frame::Stdout(data) => (1, data),
            Frame::Stderr(data) => (2, data),
            Frame::Resize { cols, rows } => {
                let mut size = [0; 4];
                size[..2].copy_from_slice(&cols.to_be_bytes());
                size[2..].copy_from_slice(&rows.to_be_bytes());
                return framed(3, &size);
            }
            Frame::Exit(code) => return framed(4, &code.to_be_bytes()),
            Frame::StdinClosed => (5, &[]),
        };
        framed(channel, payload)
    }

    /// Writes the frame to `out`.
    pub async fn write_to(&self, out: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        out.write_all(&self.encode()).await?;
        out.flush().await
    }

    /// Reads the next frame; `None` when the stream ends between frames.
    pub async fn read_from(input: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Frame>> {
        let mut header = [0; 5];
        match input.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(invalid(format!("a frame of {len} bytes is too large")));
        }
        let mut payload = vec![0; len];
        input.read_exact(&mut payload).await?;
        decode(header[0], payload).map(Some)
    }
}

fn framed(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(channel);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn decode(channel: u8, payload: Vec<u8>) -> std::io::Result<Frame> {
    let fixed = |want: usize| {
        if payload.len() == want {
            Ok(())
        } else {
            Err(invalid(format!(
                "channel {channel} carries {want} bytes, not {}",
                payload.len()
            )))
        }
    };
    Ok(match channel {
        0 => Frame::Stdin(payload.into()),
        1 => Frame::Stdout(payload.into()),
        2 => Frame::Stderr(payload.into()),
        3 => {
            fixed(4)?;
            Frame::Resize {
                cols: u16::from_be_bytes([payload[0], payload[1]]),
                rows: u16::from_be_bytes([payload[2], payload[3]]),
            }
        }
        4 => {
            fixed(4)?;
            Frame::Exit(i32::from_be_bytes([
                payload[0], payload[1], payload[2], payload[3],
            ]))
        }
        5 => {
            fixed(0)?;
            Frame::StdinClosed
        }
        other => return Err(invalid(format!("unknown channel {other}"))),
    })
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let frames = [
            Frame::Stdin(Bytes::from_static(b"echo hi\n")),
            Frame::Stdout(Bytes::from_static(b"hi\n")),
            Frame::Stderr(Bytes::new()),
            Frame::Resize {
                cols: 132,
                rows: 43,
            },
            Frame::Exit(-1),
            Frame::StdinClosed,
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut input = wire.as_slice();
        for frame in &frames {
            assert_eq!(
                Frame::read_from(&mut input).await.unwrap().as_ref(),
                Some(frame)
            );
        }
        assert_eq!(Frame::read_from(&mut input).await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_frames_are_errors() {
        for wire in [
            framed(9, b""),
            framed(4, b"12"),
            framed(3, b"12345"),
            vec![0, 0xff, 0xff, 0xff, 0xff],
            // Cut off inside the payload.
            vec![1, 0, 0, 0, 9, b'x'],
        ] {
            assert!(
                Frame::read_from(&mut wire.as_slice()).await.is_err(),
                "{wire:?}"
            );
        }
    }
}
