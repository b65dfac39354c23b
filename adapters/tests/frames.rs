//! `Frames` (Stream + Sink) between two real processes: frames of every
//! size come back whole and in order (out-of-line ones included); a sender
//! far ahead of its reader waits for room instead of failing; a clean close
//! ends the peer's stream; a peer's death ends ours with an error.

mod support;

use bytes::Bytes;
use ferry_adapters::Frames;
use ferry_transport::ConnectionConfig;
use futures_util::{SinkExt as _, StreamExt as _};
use std::io;
use std::time::Duration;
use support::{EXIT_TIMEOUT, HELPERS, die, pattern, run_bounded, start, start_with};

/// The peer: `echo` sends every frame back until the stream ends, then
/// exits; `die_after_one` echoes one frame and dies; `never_read` holds
/// the connection without reading until the test kills it.
#[test]
fn child() {
    let Some(role) = HELPERS.role() else { return };
    let connection = support::connect();
    run_bounded(async move {
        let mut frames = Frames::from_connection(connection).expect("frames");
        match role.as_str() {
            "echo" => {
                while let Some(frame) = frames.next().await {
                    let frame = frame.expect("a frame");
                    frames.send(frame.freeze()).await.expect("echoing");
                }
            }
            "die_after_one" => {
                let frame = frames.next().await.expect("one frame").expect("a frame");
                frames.send(frame.freeze()).await.expect("echoing");
                die();
            }
            "never_read" => {
                // Hold the connection; the test kills us when it is done.
                tokio::time::sleep(Duration::from_secs(20)).await;
                drop(frames);
            }
            other => panic!("unknown role {other}"),
        }
    });
}

#[test]
fn frames_of_every_size_come_back_whole_and_in_order() {
    let (connection, peer) = start("echo");
    run_bounded(async move {
        let mut frames = Frames::from_connection(connection).expect("frames");
        let inline = frames.max_inline_payload();
        // Empty, tiny, odd, exactly the in-ring maximum, and beyond it (out of line).
        let sizes = [
            0,
            1,
            15,
            16,
            17,
            4096,
            65_537,
            inline,
            inline + 1,
            3 * inline,
        ];
        for (seed, &len) in sizes.iter().enumerate() {
            let sent = Bytes::from(pattern(seed as u64, len));
            frames.send(sent.clone()).await.expect("sending");
            let back = frames
                .next()
                .await
                .expect("a frame back")
                .expect("no error");
            assert_eq!(
                back.len(),
                len,
                "frame {seed} came back with another length"
            );
            assert!(back == sent, "frame {seed} ({len} bytes) came back altered");
        }
    });
    peer.expect_success();
}

#[test]
fn a_sender_far_ahead_of_its_reader_waits_for_room() {
    // 6 MiB each way through 1 MiB rings: the sink must wait for room
    // (the peer echoes only as fast as we read) without failing or losing
    // a frame.
    const FRAMES: u64 = 96;
    const LEN: usize = 64 * 1024;
    let (connection, peer) = start("echo");
    run_bounded(async move {
        let frames = Frames::from_connection(connection).expect("frames");
        let (mut sink, mut stream) = frames.split();
        let sender = tokio::spawn(async move {
            for seed in 0..FRAMES {
                sink.feed(Bytes::from(pattern(seed, LEN))).await?;
            }
            sink.flush().await?;
            Ok::<_, io::Error>(sink)
        });
        for seed in 0..FRAMES {
            let back = stream
                .next()
                .await
                .expect("a frame back")
                .expect("no error");
            assert!(
                back[..] == pattern(seed, LEN)[..],
                "frame {seed} altered or reordered"
            );
        }
        let sink = sender.await.expect("the sender panicked").expect("sending");
        drop(sink.reunite(stream).expect("the two halves of one Frames"));
    });
    peer.expect_success();
}

#[test]
fn a_clean_close_ends_the_peers_stream() {
    // The peer's loop ends only when its stream ends (`None`): its success
    // is the proof.
    let (connection, peer) = start("echo");
    run_bounded(async move {
        let mut frames = Frames::from_connection(connection).expect("frames");
        frames
            .send(Bytes::from_static(b"one"))
            .await
            .expect("sending");
        assert_eq!(
            &frames.next().await.expect("a frame").expect("no error")[..],
            b"one"
        );
        frames.close().await.expect("closing the sink");
        let refused = frames.send(Bytes::from_static(b"after close")).await;
        assert_eq!(
            refused.expect_err("a send after close").kind(),
            io::ErrorKind::BrokenPipe
        );
    });
    peer.expect_success();
}

#[test]
fn a_dead_peer_ends_the_stream_with_an_error() {
    let (connection, mut peer) = start("die_after_one");
    run_bounded(async move {
        let mut frames = Frames::from_connection(connection).expect("frames");
        frames
            .send(Bytes::from_static(b"last"))
            .await
            .expect("sending");
        assert_eq!(
            &frames.next().await.expect("the echo").expect("no error")[..],
            b"last"
        );
        let end = frames
            .next()
            .await
            .expect("an error, not the end of the stream");
        assert_eq!(
            end.expect_err("the peer died").kind(),
            io::ErrorKind::ConnectionReset
        );
        assert!(
            frames.next().await.is_none(),
            "the stream goes on after its error"
        );
        let refused = frames.send(Bytes::from_static(b"to the dead")).await;
        assert_eq!(
            refused.expect_err("a send to a dead peer").kind(),
            io::ErrorKind::BrokenPipe
        );
    });
    assert!(!peer.wait_timeout(EXIT_TIMEOUT).success());
}

#[test]
fn a_send_to_a_peer_that_never_reads_times_out() {
    // Our `send_timeout` bounds the wait for room: the sink fails with
    // `TimedOut` instead of waiting for ever.
    let config = ConnectionConfig::default().send_timeout(Some(Duration::from_millis(200)));
    let (connection, peer) = start_with("never_read", config);
    run_bounded(async move {
        let mut frames = Frames::from_connection(connection).expect("frames");
        let frame = Bytes::from(pattern(1, 64 * 1024));
        let mut sent = 0usize;
        let error = loop {
            match frames.send(frame.clone()).await {
                Ok(()) => sent += 1,
                Err(error) => break error,
            }
            assert!(sent < 1024, "64 MiB went into a 1 MiB ring nobody reads");
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(sent > 0, "not even one frame fitted the empty ring");
    });
    peer.kill_and_reap();
}
