//! `ByteStream` (AsyncRead + AsyncWrite) between two real processes: a
//! write larger than the in-ring maximum is split and the bytes arrive
//! whole and in order; shutdown is a half-close (end of stream for the
//! peer after the data, writes refused after it, reading goes on); a peer
//! that closes cleanly without shutting down also gives end of stream; a
//! peer that dies gives an error, never a clean end; a vectored write
//! goes out as one frame, and a read takes every frame already there.

mod support;

use ferry_adapters::ByteStream;
use std::io;
use support::{EXIT_TIMEOUT, HELPERS, die, pattern, run_bounded, start};
use tokio::io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The peer's roles:
/// - `echo`: copies what it reads back until end of stream, then shuts
///   down and exits;
/// - `request_reply`: reads a request to end of stream, answers, shuts
///   down, and waits for our end before it exits;
/// - `close_without_shutdown`: writes and exits (dropping the connection);
/// - `die_mid_stream`: writes part of a message and dies.
#[test]
fn child() {
    let Some(role) = HELPERS.role() else { return };
    let connection = support::connect();
    run_bounded(async move {
        let mut stream = ByteStream::from_connection(connection).expect("a byte stream");
        match role.as_str() {
            "echo" => {
                let mut buf = vec![0u8; 100_000];
                loop {
                    let n = stream.read(&mut buf).await.expect("reading");
                    if n == 0 {
                        break;
                    }
                    stream.write_all(&buf[..n]).await.expect("echoing");
                }
                stream.shutdown().await.expect("shutting down");
            }
            "request_reply" => {
                let mut request = Vec::new();
                stream.read_to_end(&mut request).await.expect("the request");
                assert_eq!(request, b"request");
                stream.write_all(b"reply to ").await.expect("replying");
                stream.write_all(&request).await.expect("replying");
                stream.shutdown().await.expect("shutting down");
                // Stay until the test is done with its end.
                let mut rest = Vec::new();
                stream
                    .read_to_end(&mut rest)
                    .await
                    .expect("our end of stream again");
            }
            "close_without_shutdown" => {
                stream.write_all(b"bye").await.expect("writing");
            }
            "die_mid_stream" => {
                stream.write_all(b"partial").await.expect("writing");
                die();
            }
            other => panic!("unknown role {other}"),
        }
    });
}

#[test]
fn a_write_larger_than_the_ring_maximum_is_split_and_arrives_whole() {
    let (connection, peer) = start("echo");
    run_bounded(async move {
        let mut stream = ByteStream::from_connection(connection).expect("a byte stream");
        let inline = stream.max_inline_payload();
        let message = pattern(7, 5 * inline + 12_345);
        // One write takes at most one in-ring frame's worth.
        let first = stream.write(&message).await.expect("writing");
        assert_eq!(
            first, inline,
            "a large write is split at the in-ring maximum"
        );
        let (mut reader, mut writer) = tokio::io::split(stream);
        let rest = message[first..].to_vec();
        let writing = tokio::spawn(async move {
            writer.write_all(&rest).await?;
            writer.shutdown().await?;
            Ok::<_, io::Error>(writer)
        });
        let mut back = Vec::new();
        reader
            .read_to_end(&mut back)
            .await
            .expect("reading the echo to its end");
        writing
            .await
            .expect("the writer panicked")
            .expect("writing");
        assert_eq!(back.len(), message.len());
        assert!(back == message, "the echoed bytes differ");
    });
    peer.expect_success();
}

#[test]
fn a_vectored_write_is_one_frame() {
    let (connection, peer) = start("echo");
    run_bounded(async move {
        let mut stream = ByteStream::from_connection(connection).expect("a byte stream");
        let middle = pattern(3, 3000);
        let parts = [
            io::IoSlice::new(b"header "),
            io::IoSlice::new(&middle),
            io::IoSlice::new(b" trailer"),
        ];
        let total: usize = parts.iter().map(|part| part.len()).sum();
        assert!(AsyncWrite::is_write_vectored(&stream));
        let written = stream.write_vectored(&parts).await.expect("writing");
        assert_eq!(written, total, "every buffer in one write");
        assert_eq!(stream.get_ref().get_ref().stats().frames_sent, 1);
        // Three more frames, then our end of stream: the echo reads them,
        // then writes back what each read returned.
        for word in [&b"one"[..], b"two", b"three"] {
            stream.write_all(word).await.expect("writing");
        }
        stream.shutdown().await.expect("shutting down");
        let mut expected = b"header ".to_vec();
        expected.extend_from_slice(&middle);
        expected.extend_from_slice(b" trailer");
        expected.extend_from_slice(b"onetwothree");
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.expect("the echo");
        assert!(back == expected, "the echoed bytes differ");
    });
    peer.expect_success();
}

/// A read takes every frame already there, as far as the buffer holds,
/// and keeps the rest of the last one. (In one process: the frames are
/// all in the ring before the read, whatever the scheduler does.)
#[test]
fn a_read_takes_the_frames_already_there() {
    run_bounded(async move {
        let config = ferry_transport::ConnectionConfig::default();
        let (ours, mut theirs) = ferry_transport::Connection::pair(config).expect("a pair");
        let mut stream = ByteStream::from_connection(ours).expect("a byte stream");
        for word in [&b"one "[..], b"two ", b"three ", b"four"] {
            theirs
                .try_send_frame(word)
                .expect("a frame into an empty ring");
        }
        let mut buf = [0u8; 12];
        let n = stream.read(&mut buf).await.expect("reading");
        assert_eq!(&buf[..n], b"one two thre", "three frames and a part");
        let n = stream.read(&mut buf).await.expect("reading");
        assert_eq!(&buf[..n], b"e four", "the rest, then the last frame");
        theirs.try_send_frame(b"").expect("the end of stream");
        assert_eq!(stream.read(&mut buf).await.expect("reading"), 0);
    });
}

#[test]
fn shutdown_is_a_half_close() {
    let (connection, peer) = start("request_reply");
    run_bounded(async move {
        let mut stream = ByteStream::from_connection(connection).expect("a byte stream");
        stream.write_all(b"request").await.expect("writing");
        stream.shutdown().await.expect("shutting down");
        stream
            .shutdown()
            .await
            .expect("shutting down twice is harmless");
        let refused = stream.write(b"more").await;
        assert_eq!(
            refused.expect_err("a write after shutdown").kind(),
            io::ErrorKind::BrokenPipe
        );
        // Reading goes on after our shutdown: the reply, then its end.
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("the reply");
        assert_eq!(reply, b"reply to request");
        let mut buf = [0u8; 8];
        assert_eq!(
            stream.read(&mut buf).await.expect("reading past the end"),
            0
        );
    });
    peer.expect_success();
}

#[test]
fn a_clean_close_without_shutdown_is_end_of_stream() {
    let (connection, peer) = start("close_without_shutdown");
    run_bounded(async move {
        let mut stream = ByteStream::from_connection(connection).expect("a byte stream");
        let mut all = Vec::new();
        stream
            .read_to_end(&mut all)
            .await
            .expect("data, then end of stream");
        assert_eq!(all, b"bye");
    });
    peer.expect_success();
}

#[test]
fn a_dead_peer_is_an_error_not_an_end_of_stream() {
    let (connection, mut peer) = start("die_mid_stream");
    run_bounded(async move {
        let mut stream = ByteStream::from_connection(connection).expect("a byte stream");
        let mut all = Vec::new();
        let error = stream
            .read_to_end(&mut all)
            .await
            .expect_err("a stream cut by the peer's death must not end cleanly");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(
            all, b"partial",
            "the data sent before the death arrives first"
        );
        let refused = stream.write_all(b"to the dead").await;
        assert_eq!(
            refused.expect_err("a write to a dead peer").kind(),
            io::ErrorKind::BrokenPipe
        );
    });
    assert!(!peer.wait_timeout(EXIT_TIMEOUT).success());
}
