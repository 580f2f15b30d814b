//! Fuzzing the protocol decoders with proptest: whatever bytes arrive, the agent's decoder
//! (`serve`'s input) and the driver's (agent messages and data chunks) end without a panic, a
//! hang, or an allocation beyond the line and chunk limits.
//!
//! CI runs a short seeded run (the default case count below). The documented long run:
//! `PROPTEST_CASES=100000 cargo test --release --test protocol_fuzz` (see docs/reliability.md).

use std::io::{BufReader, Cursor, Read};

use bbr_agent::protocol::AgentMessage;
use bbr_agent::protocol::framing::{ChunkReader, MAX_CHUNK, MAX_LINE, read_line};
use bbr_agent::serve::input::{Input, decode};
use proptest::prelude::*;

/// Pieces a hostile or broken driver (or agent) might send, mixed at random.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    let requests = prop::sample::select(vec![
        r#"{"id":1,"op":"hello","protocol":2,"deployment":"d","instance":{"group":"g","index":"0"},"settings":{}}"#,
        r#"{"id":2,"op":"describe"}"#,
        r#"{"id":3,"op":"receive_artifact","job":"j","checksums":{"./a":"00"}}"#,
        r#"{"id":4,"op":"run_scripts","script":"backup","jobs":["j"],"parallel":true,"after_backup_successful":null}"#,
        r#"{"type":"data","id":5}"#,
        r#"{"type":"ok","id":6,"result":null}"#,
        r#"{"type":"output","id":7,"job":"j","script":"backup","stream":"stdout","line":"x"}"#,
        r#"{"id":18446744073709551615,"op":"bye"}"#,
        r#"{"id":-1}"#,
        r#"{"#,
        "\u{0}\u{ff}",
    ])
    .prop_map(|s| s.as_bytes().to_vec());
    prop_oneof![
        4 => requests,
        2 => Just(b"\n".to_vec()),
        2 => prop::collection::vec(any::<u8>(), 0..64),
        // A chunk header, sometimes over the limit, sometimes followed by too little data.
        2 => (0u32..(2 * MAX_CHUNK as u32), prop::collection::vec(any::<u8>(), 0..32))
            .prop_map(|(len, data)| {
                let mut v = len.to_be_bytes().to_vec();
                v.extend(data);
                v
            }),
        1 => Just(vec![0, 0, 0, 0]),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(segment(), 0..24).prop_map(|segments| segments.concat())
}

/// The driver's side, as `RemoteInstance` reads an agent: lines, and chunks after `data`.
fn decode_as_driver(bytes: &[u8]) -> usize {
    let mut input = BufReader::new(Cursor::new(bytes));
    let mut messages = 0;
    while let Ok(line) = read_line(&mut input) {
        assert!(line.len() <= MAX_LINE);
        if let Ok(message) = serde_json::from_slice::<AgentMessage>(&line) {
            messages += 1;
            if let AgentMessage::Data { .. } = message {
                let mut chunks = ChunkReader::new(&mut input);
                let mut sink = Vec::new();
                if chunks.read_to_end(&mut sink).is_err() {
                    break;
                }
            }
        }
    }
    messages
}

proptest! {
    #![proptest_config(ProptestConfig {
        // 2,000 cases with a fixed seed in CI: the same run every time. PROPTEST_CASES widens
        // it; change the seed for another sample.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000),
        rng_algorithm: prop::test_runner::RngAlgorithm::ChaCha,
        rng_seed: prop::test_runner::RngSeed::Fixed(0xbb_a6e7),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_agent_decodes_any_stream_without_panic_and_within_bounds(bytes in stream()) {
        let mut items = 0usize;
        let mut broken = false;
        decode(Cursor::new(&bytes), |item| {
            items += 1;
            if let Input::Data(chunk) = &item {
                assert!(!chunk.is_empty() && chunk.len() <= MAX_CHUNK);
            }
            // Nothing may follow a broken stream.
            assert!(!broken, "an item after Broken");
            broken = matches!(item, Input::Broken(_));
            true
        });
        // Every item consumed at least one byte, so the count is bounded by the input.
        prop_assert!(items <= bytes.len() + 1);
    }

    #[test]
    fn the_driver_decodes_any_stream_without_panic(bytes in stream()) {
        let messages = decode_as_driver(&bytes);
        prop_assert!(messages <= bytes.len());
    }
}

#[test]
fn a_line_over_the_limit_is_refused_without_reading_it_all_into_memory() {
    // 64 MiB of input with no newline: the decoder stops at the limit.
    let endless = std::io::repeat(b'x').take(64 << 20);
    let mut items = Vec::new();
    decode(BufReader::new(endless), |item| {
        items.push(format!("{item:?}"));
        true
    });
    assert_eq!(items.len(), 1);
    assert!(items[0].contains("LineTooLong"), "{items:?}");
}
