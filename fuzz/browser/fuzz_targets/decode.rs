#![no_main]
//! Any bytes as a frame of any of the demo's protocols.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_transport::fuzzing::fuzz_decode::<ferry_fuzz_browser::AllProtocols>(data)
});
